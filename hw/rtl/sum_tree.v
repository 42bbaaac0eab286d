// sum_tree: y = the sum of N signed W-bit terms, as a balanced tree of two's-complement
// adders, each level one bit wider (exact: no carry is lost). N is a power of two.
module sum_tree #(
    parameter integer N = 32,
    parameter integer W = 8
) (
    input  wire [N*W-1:0]                  x,
    output wire signed [W+$clog2(N)-1:0]   y
);
    generate
        if (N == 1) begin : leaf
            assign y = $signed(x);
        end else begin : node
            localparam integer H = N / 2, WO = W + $clog2(H);
            wire signed [WO-1:0] lo, hi;
            sum_tree #(.N(H), .W(W)) l (.x(x[H*W-1:0]), .y(lo));
            sum_tree #(.N(H), .W(W)) h (.x(x[N*W-1:H*W]), .y(hi));
            assign y = lo + hi;
        end
    endgenerate
endmodule
