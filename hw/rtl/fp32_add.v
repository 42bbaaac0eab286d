// fp32_add: IEEE 754 binary32 addition, round to nearest even, combinational.
//
// Subnormals are kept (no flush to zero); x + (-x) = +0, (-0) + (-0) = -0; overflow gives
// infinity; Inf + -Inf and any NaN operand give the quiet NaN 0x7fc00000 (docs/hardware.md,
// accumulate mode). Method: the larger magnitude first, the smaller shifted right with a
// guard, a round and a sticky bit (three extra bits are enough for one correct rounding),
// add or subtract, normalize (left by at most the exponent allows, so subnormals come out
// right), round, repack.
module fp32_add (
    input  wire [31:0] a,
    input  wire [31:0] b,
    output reg  [31:0] y
);
    reg        swap, sx, sy, sub;
    reg [31:0] x, z;            // |x| >= |z|
    reg [7:0]  ex, ez, d;
    reg [23:0] mx, mz;
    reg [26:0] ax, az, sh_out;
    reg [27:0] s;
    reg [8:0]  e;               // working exponent (biased, >= 1)
    reg [4:0]  lz;
    reg [4:0]  nshift;
    reg        rnd;
    reg [24:0] sig;
    reg [8:0]  ef;
    integer    i;
    always @* begin
        sh_out = 0;
        lz = 0;
        nshift = 0;
        swap = b[30:0] > a[30:0];
        x = swap ? b : a;
        z = swap ? a : b;
        sx = x[31];
        sy = z[31];
        sub = sx ^ sy;
        ex = x[30:23] == 0 ? 8'd1 : x[30:23];
        ez = z[30:23] == 0 ? 8'd1 : z[30:23];
        mx = {x[30:23] != 0, x[22:0]};
        mz = {z[30:23] != 0, z[22:0]};
        d = ex - ez;
        ax = {mx, 3'b000};
        // the smaller operand, shifted right by d; the bits shifted out go to the sticky bit
        if (d >= 27) begin
            az = {26'd0, mz != 0};
        end else begin
            az = {mz, 3'b000} >> d;
            sh_out = {mz, 3'b000} & ~({27{1'b1}} << d);
            az[0] = az[0] | (sh_out != 0);
        end
        e = {1'b0, ex};
        if (!sub) begin
            s = {1'b0, ax} + {1'b0, az};
            if (s[27]) begin
                s = {1'b0, s[27:2], s[1] | s[0]};
                e = e + 1;
            end
        end else begin
            s = {1'b0, ax} - {1'b0, az};
            // leading zeros of s[26:0]; shift left by as many as the exponent allows
            for (i = 0; i < 27; i = i + 1)
                if (s[26 - i] == 1'b0 && lz == i)
                    lz = i + 1;
            nshift = (e - 9'd1 < {4'd0, lz}) ? e[4:0] - 5'd1 : lz;   // e <= 27 in that case
            s = s << nshift;
            e = e - nshift;
        end
        // s[26:3] is the significand, s[2] guard, s[1] round, s[0] sticky
        rnd = s[2] & (s[1] | s[0] | s[3]);
        sig = {1'b0, s[26:3]} + rnd;
        if (sig[24]) begin
            ef = e + 1;                 // rounded up to the next power of two
            sig = sig >> 1;
        end else if (sig[23]) begin
            ef = e;
        end else begin
            ef = 0;                     // subnormal (e is 1 here)
        end
        if (a[30:23] == 8'hff && a[22:0] != 0 || b[30:23] == 8'hff && b[22:0] != 0)
            y = 32'h7fc0_0000;                                   // NaN in
        else if (a[30:23] == 8'hff && b[30:23] == 8'hff)
            y = a[31] == b[31] ? a : 32'h7fc0_0000;              // Inf + Inf, Inf - Inf
        else if (a[30:23] == 8'hff)
            y = a;
        else if (b[30:23] == 8'hff)
            y = b;
        else if (s[26:0] == 0 && sub)
            y = 32'h0000_0000;                                   // exact cancellation: +0
        else if (ef >= 255)
            y = {sx, 31'h7f80_0000};                             // overflow
        else
            y = {sx, ef[7:0], sig[22:0]};
    end
endmodule
