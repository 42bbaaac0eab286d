// mx_array: an output-stationary systolic array of R x C PEs (docs/hardware.md, "The PE
// array"). PE (r, c) accumulates output (m0 + r, n0 + c) of a GEMM tile over its K / k
// blocks in accumulate mode. A blocks (row r of the tile: scale, k codes, valid, first)
// enter at the left of row r and move one PE right per clock; B blocks (column c: scale,
// k codes) enter at the top of column c and move one PE down per clock. The driver skews
// them: block j of row r enters in cycle j + r, block j of column c in cycle j + c, so
// both reach PE (r, c) in cycle j + r + c. Each PE's running sum leaves on its own output;
// the last block of a tile leaves the tile's result (LATENCY 3 cycles after it reached
// the PE). Tiles follow each other with no gap: `first` restarts a PE's accumulator.
module mx_array #(
    parameter integer R = 2,
    parameter integer C = 2,
    parameter integer FMT_A = 4,
    parameter integer FMT_B = 4,
    parameter integer K = 32
) (
    input  wire                 clk,
    input  wire                 rst,
    input  wire [R-1:0]         a_valid,
    input  wire [R-1:0]         a_first,
    input  wire [8*R-1:0]       a_scale,
    input  wire [8*K*R-1:0]     a_codes,
    input  wire [8*C-1:0]       b_scale,
    input  wire [8*K*C-1:0]     b_codes,
    output wire [R*C-1:0]       out_valid,
    output wire [32*R*C-1:0]    out_result
);
    localparam integer AW = 2 + 8 + 8 * K;   // valid, first, scale, codes
    localparam integer BW = 8 + 8 * K;       // scale, codes
    // a_bus[r][c]: the A stream as PE (r, c) sees it; b_bus[r][c] likewise for B
    wire [AW-1:0] a_bus [0:R-1][0:C-1];
    wire [BW-1:0] b_bus [0:R-1][0:C-1];
    genvar r, c;
    generate
        for (r = 0; r < R; r = r + 1) begin : row
            for (c = 0; c < C; c = c + 1) begin : col
                if (c == 0) begin : a_in
                    assign a_bus[r][c] = {a_valid[r], a_first[r], a_scale[8*r +: 8],
                                          a_codes[8*K*r +: 8*K]};
                end else begin : a_hop
                    reg [AW-1:0] q;
                    always @(posedge clk)
                        q <= rst ? {AW{1'b0}} : a_bus[r][c-1];
                    assign a_bus[r][c] = q;
                end
                if (r == 0) begin : b_in
                    assign b_bus[r][c] = {b_scale[8*c +: 8], b_codes[8*K*c +: 8*K]};
                end else begin : b_hop
                    reg [BW-1:0] q;
                    always @(posedge clk)
                        q <= b_bus[r-1][c];
                    assign b_bus[r][c] = q;
                end
                wire [AW-1:0] a = a_bus[r][c];
                wire [BW-1:0] b = b_bus[r][c];
                mx_pe #(.FMT_A(FMT_A), .FMT_B(FMT_B), .K(K)) pe (
                    .clk(clk), .rst(rst), .in_valid(a[AW-1]), .in_acc(1'b1),
                    .in_first(a[AW-2]), .in_sa(a[AW-3 -: 8]), .in_sb(b[BW-1 -: 8]),
                    .in_a(a[8*K-1:0]), .in_b(b[8*K-1:0]),
                    .out_valid(out_valid[r*C + c]), .out_result(out_result[32*(r*C + c) +: 32]));
            end
        end
    endgenerate
endmodule
