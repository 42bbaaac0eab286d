// pe_shell: a PE (or the array) on a real FPGA's pins, for place and route. A PE has over
// 500 input bits and an iCE40 a few dozen pins, so the operands arrive serially: a shift
// register, one bit per clock from `sin`, holds every input of the PE (codes, scales,
// valid, accumulate, first) and feeds it in parallel; the 32-bit result is folded to 8 pins
// by XOR (every result bit stays observable, so synthesis keeps all of the PE). The shift
// register (2*8*K + 19 flip-flops) is the shell's, not the PE's: docs/hardware.md reports
// the PE's own cells from out-of-context synthesis and the shell's only for Fmax and fit.
module pe_shell #(
    parameter integer FMT = 0,
    parameter integer K = 32
) (
    input  wire       clk,
    input  wire       rst,
    input  wire       sin,
    output reg  [7:0] fold,
    output reg        valid
);
    localparam integer W = 2 * 8 * K + 16 + 3;
    reg [W-1:0] sr;
    always @(posedge clk)
        sr <= {sr[W-2:0], sin};
    wire        ov;
    wire [31:0] res;
    mx_pe #(.FMT_A(FMT), .FMT_B(FMT), .K(K)) pe (
        .clk(clk), .rst(rst), .in_valid(sr[0]), .in_acc(sr[1]), .in_first(sr[2]),
        .in_sa(sr[10:3]), .in_sb(sr[18:11]), .in_a(sr[18+8*K:19]), .in_b(sr[W-1:19+8*K]),
        .out_valid(ov), .out_result(res));
    always @(posedge clk) begin
        valid <= ov;
        fold <= res[7:0] ^ res[15:8] ^ res[23:16] ^ res[31:24];
    end
endmodule
