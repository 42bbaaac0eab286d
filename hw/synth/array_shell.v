// array_shell: mx_array on the FPGA's pins for place and route, as pe_shell does for one
// PE: every array input from a serial shift register, every output folded by XOR to 8 pins.
module array_shell #(
    parameter integer R = 2,
    parameter integer C = 2,
    parameter integer FMT = 4,
    parameter integer K = 32
) (
    input  wire       clk,
    input  wire       rst,
    input  wire       sin,
    output reg  [7:0] fold,
    output reg        valid
);
    localparam integer WA = R * (2 + 8 + 8 * K), W = WA + C * (8 + 8 * K);
    reg [W-1:0] sr;
    always @(posedge clk)
        sr <= {sr[W-2:0], sin};
    wire [R*C-1:0]    ov;
    wire [32*R*C-1:0] res;
    mx_array #(.R(R), .C(C), .FMT_A(FMT), .FMT_B(FMT), .K(K)) arr (
        .clk(clk), .rst(rst), .a_valid(sr[R-1:0]), .a_first(sr[2*R-1:R]),
        .a_scale(sr[10*R-1:2*R]), .a_codes(sr[WA-1:10*R]),
        .b_scale(sr[WA+8*C-1:WA]), .b_codes(sr[W-1:WA+8*C]),
        .out_valid(ov), .out_result(res));
    reg [31:0] x;
    integer i;
    always @* begin
        x = 0;
        for (i = 0; i < R * C; i = i + 1)
            x = x ^ res[32*i +: 32];
    end
    always @(posedge clk) begin
        valid <= |ov;
        fold <= x[7:0] ^ x[15:8] ^ x[23:16] ^ x[31:24];
    end
endmodule
