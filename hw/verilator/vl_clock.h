// vl_clock: one clock of a Verilated model with ports clk and rst (the benches' only way
// of advancing time), and the reset both benches start with.
#ifndef MXRLHF_HW_VL_CLOCK_H
#define MXRLHF_HW_VL_CLOCK_H

// Low, then the rising edge: the registers take what the inputs hold now.
template <class M> void vl_tick(M *m)
{
    m->clk = 0;
    m->eval();
    m->clk = 1;
    m->eval();
}

// Two clocks with rst high, then rst low.
template <class M> void vl_reset(M *m)
{
    m->clk = 0;
    m->rst = 1;
    vl_tick(m);
    vl_tick(m);
    m->rst = 0;
}

#endif
