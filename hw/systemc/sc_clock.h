// sc_clock: one clock cycle of the SystemC benches, whose clock is a signal they toggle:
// low for 5 ns (inputs written before settle), then high for 5 ns (the modules act on the
// rising edge and their outputs settle before the bench reads them).
#ifndef MXRLHF_HW_SC_CLOCK_H
#define MXRLHF_HW_SC_CLOCK_H

#include <systemc>

inline void sc_cycle(sc_core::sc_signal<bool> &clk)
{
    clk.write(false);
    sc_core::sc_start(5, sc_core::SC_NS);
    clk.write(true);
    sc_core::sc_start(5, sc_core::SC_NS);
}

#endif
