// mx_pe_bank: the six PEs side by side (k = K lanes each), for the test bench: every PE
// sees the same codes and scales, and in_fmt selects which one takes them (in_valid).
// Outputs are per format; at most one is valid per clock when at most one input is.
module mx_pe_bank #(
    parameter integer K = 32
) (
    input  wire           clk,
    input  wire           rst,
    input  wire           in_valid,
    input  wire [2:0]     in_fmt,
    input  wire           in_acc,
    input  wire           in_first,
    input  wire [7:0]     in_sa,
    input  wire [7:0]     in_sb,
    input  wire [8*K-1:0] in_a,
    input  wire [8*K-1:0] in_b,
    output wire [5:0]     out_valid,
    output wire [6*32-1:0] out_result,
    // the accumulator's adder on its own, for the bench's adder pass
    input  wire [31:0]    add_a,
    input  wire [31:0]    add_b,
    output wire [31:0]    add_y
);
    fp32_add check_add (.a(add_a), .b(add_b), .y(add_y));
    genvar f;
    generate
        for (f = 0; f < 6; f = f + 1) begin : fmt
            mx_pe #(.FMT_A(f), .FMT_B(f), .K(K)) pe (
                .clk(clk), .rst(rst), .in_valid(in_valid && in_fmt == f), .in_acc(in_acc),
                .in_first(in_first), .in_sa(in_sa), .in_sb(in_sb), .in_a(in_a), .in_b(in_b),
                .out_valid(out_valid[f]), .out_result(out_result[32*f +: 32]));
        end
    endgenerate
endmodule
