// mx_pe: the MX block dot-product processing element (docs/hardware.md).
//
// One block per clock (initiation interval 1), result three clocks after the inputs are
// sampled (latency 3):
//   stage 1  decode the 2K element codes, K small multipliers, align each product
//            exactly, sum the K signed products (an adder tree, exact: no bit dropped)
//   stage 2  the block result: leading one, shift, round to nearest even to binary32
//            (subnormals kept, overflow to infinity, exact zero +0, underflow keeps the
//            sign), both E8M0 scales applied in the exponent
//   stage 3  block mode: the result; accumulate mode: acc <- first ? R : acc (+) R, an
//            IEEE binary32 adder (fp32_add.v) in one clock, so consecutive blocks of a
//            chain can arrive on consecutive clocks
//
// FMT_A / FMT_B: 0 mxfp8_e4m3, 1 mxfp8_e5m2, 2 mxfp6_e3m2, 3 mxfp6_e2m3, 4 mxfp4_e2m1,
// 5 mxint8. Lane i's code is in_a[8*i +: 8] (the low bits; int8 two's complement). Codes
// must be finite (no FP8 NaN, no E5M2 infinity) and scales below 0xff, as in the vector
// format; lanes beyond a block's k hold code 0 (a zero product changes no exact sum).
module mx_pe #(
    parameter integer FMT_A = 0,
    parameter integer FMT_B = 0,
    parameter integer K = 32
) (
    input  wire           clk,
    input  wire           rst,       // synchronous; clears the valid bits and the accumulator
    input  wire           in_valid,
    input  wire           in_acc,    // accumulate mode
    input  wire           in_first,  // accumulate mode: this block starts a new chain
    input  wire [7:0]     in_sa,
    input  wire [7:0]     in_sb,
    input  wire [8*K-1:0] in_a,
    input  wire [8*K-1:0] in_b,
    output reg            out_valid,
    output reg  [31:0]    out_result
);
    // ---- format constants --------------------------------------------------------------
    // element value = N * 2^Q, |N| = sig << sh with sig < 2^SIGW and sh <= SHMAX
    function integer f_ebits(input integer f);
        f_ebits = f == 0 ? 4 : f == 1 ? 5 : f == 2 ? 3 : f == 3 ? 2 : f == 4 ? 2 : 0;
    endfunction
    function integer f_mbits(input integer f);
        f_mbits = f == 0 ? 3 : f == 1 ? 2 : f == 2 ? 2 : f == 3 ? 3 : f == 4 ? 1 : 6;
    endfunction
    function integer f_bits(input integer f);
        f_bits = f == 2 || f == 3 ? 6 : f == 4 ? 4 : 8;
    endfunction
    function integer f_sigw(input integer f);   // int8: the magnitude, up to 128
        f_sigw = f == 5 ? 8 : f_mbits(f) + 1;
    endfunction
    function integer f_shmax(input integer f);  // largest biased exponent minus 1
        f_shmax = f == 0 ? 14 : f == 1 ? 29 : f == 2 ? 6 : f == 3 ? 2 : f == 4 ? 2 : 0;
    endfunction
    function integer f_q(input integer f);      // exponent of N's unit: emin - m
        f_q = f == 0 ? -9 : f == 1 ? -16 : f == 2 ? -4 : f == 3 ? -3 : f == 4 ? -1 : -6;
    endfunction

    localparam integer SIGA = f_sigw(FMT_A), SIGB = f_sigw(FMT_B);
    localparam integer SHA = f_shmax(FMT_A), SHB = f_shmax(FMT_B);
    localparam integer SHW = 6;                               // shift amounts (<= 58)
    localparam integer PW = SIGA + SIGB + SHA + SHB;          // one aligned product
    localparam integer SW = PW + $clog2(K) + 2;               // the exact signed sum
    localparam integer QQ = f_q(FMT_A) + f_q(FMT_B);
    localparam integer HW = $clog2(SW);                       // leading-one position
    localparam integer TW = SW + 25;                          // sum with room to round

    // ---- decode ------------------------------------------------------------------------
    function [SHW+8:0] decode(input [7:0] code, input integer f);  // {sign, sh, sig}
        reg [7:0] mag;
        reg [4:0] e;
        reg [3:0] m;
        reg       s;
        begin
            if (f == 5) begin
                s = code[7];
                mag = s ? (~code + 8'd1) : code;                  // 0x80 -> 128
                decode = {s, {SHW{1'b0}}, mag};
            end else begin
                s = code[f_bits(f) - 1];
                e = (code >> f_mbits(f)) & ((1 << f_ebits(f)) - 1);
                m = code & ((1 << f_mbits(f)) - 1);
                mag = ((e != 0) << f_mbits(f)) | m;               // hidden bit and mantissa
                decode = {s, e == 0 ? {SHW{1'b0}} : (e - 5'd1), mag};
            end
        end
    endfunction

    // ---- stage 1: products and their exact sum ----------------------------------------
    // Lane i's signed product is -p_i = ~p_i + 1 when negative, so the K conditional
    // negations cost K XOR rows and one popcount of the signs added at the end; the K
    // terms go through a balanced adder tree (sum_tree) whose adders grow a bit per level.
    localparam integer TWD = PW + 1;                          // one signed term
    reg  [K*TWD-1:0] terms;
    reg  [$clog2(K):0] nneg;
    integer i;
    reg [SHW+8:0] da, db;
    reg [PW-1:0]  pmag;
    reg           neg;
    always @* begin
        nneg = 0;
        for (i = 0; i < K; i = i + 1) begin
            da = decode(in_a[8*i +: 8], FMT_A);
            db = decode(in_b[8*i +: 8], FMT_B);
            pmag = (da[SIGA-1:0] * db[SIGB-1:0]) << (da[SHW+7:8] + db[SHW+7:8]);
            neg = da[SHW+8] ^ db[SHW+8];
            terms[i*TWD +: TWD] = {1'b0, pmag} ^ {TWD{neg}};
            nneg = nneg + neg;
        end
    end
    wire signed [TWD+$clog2(K)-1:0] tree;
    sum_tree #(.N(K), .W(TWD)) adders (.x(terms), .y(tree));
    wire signed [SW-1:0] sum_c = tree + $signed({1'b0, nneg});

    reg                 s1_valid, s1_acc, s1_first;
    reg signed [SW-1:0] s1_sum;
    reg signed [11:0]   s1_x;   // exponent of the sum's unit: QQ + sa + sb - 254
    always @(posedge clk) begin
        s1_valid <= rst ? 1'b0 : in_valid;
        s1_acc   <= in_acc;
        s1_first <= in_first;
        s1_sum   <= sum_c;
        s1_x     <= QQ + $signed({4'd0, in_sa}) + $signed({4'd0, in_sb}) - 254;
    end

    // ---- stage 2: round to binary32 ----------------------------------------------------
    reg [SW-1:0]      mag2;
    reg [HW:0]        h;
    reg signed [12:0] ebase, rp;
    reg [12:0]        r2;         // rp + 24: t >> (r2 - 1) leaves the guard bit at bit 0
    reg [TW-1:0]      t, mask;
    reg [25:0]        u;          // q and the guard bit
    reg               guard, sticky;
    reg [24:0]        q;
    reg [32:0]        bits;
    reg [31:0]        res_c;
    integer j;
    always @* begin
        mag2 = s1_sum[SW-1] ? -s1_sum : s1_sum;
        h = 0;
        for (j = 0; j < SW; j = j + 1)
            if (mag2[j])
                h = j;
        ebase = $signed({1'b0, h}) + s1_x + 126;              // biased exponent of the top bit
        rp = ebase > 0 ? $signed({1'b0, h}) - 23 : -149 - s1_x; // weight of the result's last bit
        r2 = rp + 24;                                           // >= 1 always
        if (r2 > TW)
            r2 = TW + 1;                                        // everything below the guard
        t = {mag2, 24'd0};
        u = t >> (r2 - 1);                                      // guard bit at bit 0
        mask = ~({TW{1'b1}} << (r2 - 1));
        guard = u[0];
        sticky = |(t & mask);
        q = u[25:1];
        q = q + (guard & (sticky | q[0]));                      // <= 2^24
        bits = {(ebase > 0 ? ebase[9:0] : 10'd0), 23'd0} + q;
        if (mag2 == 0)
            res_c = 32'h0000_0000;
        else if (ebase > 254 || bits >= 33'h0_7f80_0000)
            res_c = {s1_sum[SW-1], 31'h7f80_0000};
        else
            res_c = {s1_sum[SW-1], bits[30:0]};
    end

    reg        s2_valid, s2_acc, s2_first;
    reg [31:0] s2_res;
    always @(posedge clk) begin
        s2_valid <= rst ? 1'b0 : s1_valid;
        s2_acc   <= s1_acc;
        s2_first <= s1_first;
        s2_res   <= res_c;
    end

    // ---- stage 3: the result, or the accumulator ---------------------------------------
    reg  [31:0] acc;
    wire [31:0] acc_sum;
    fp32_add adder (.a(acc), .b(s2_res), .y(acc_sum));
    always @(posedge clk) begin
        out_valid <= rst ? 1'b0 : s2_valid;
        if (rst)
            acc <= 32'h0000_0000;
        else if (s2_valid && s2_acc)
            acc <= s2_first ? s2_res : acc_sum;
        out_result <= s2_acc ? (s2_first ? s2_res : acc_sum) : s2_res;
    end
endmodule
