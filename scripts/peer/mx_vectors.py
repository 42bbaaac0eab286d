#!/usr/bin/env python3
"""mx_vectors: independent MX test vectors for what ../shared/mx-golden lacks.

Builds tests/fixtures/mx/mx_vectors.bin: fake quant, E8M0 scale bytes and packed
element bytes for every MX format, scale rule (floor, rceil) and rounding (nearest,
even, trunc, stochastic), blocks along rows and along columns, with short final
blocks, Inf/NaN blocks, fp32 subnormals, exact ties, rceil boundaries and saturation;
plus bf16 and fp16 casts.

Independence: nothing here calls or reads mxrlhf code. Values come from an exact
rational model written from the OCP MX v1.0 text and microxcaling's documented
semantics (fractions.Fraction, no floating point in the rounding), and wherever
PyTorch has the cast the model is checked against it, value and byte:
  - float8_e4m3fn / float8_e5m2 (round to nearest even; they do not saturate, so the
    scaled values are clamped to the format's max first),
  - float8_e8m0fnu for the scale bytes (encode of the exact power of two, and decode),
  - bfloat16 / float16 casts.
Any disagreement aborts the run. fp6, fp4 and int have no PyTorch cast: the exact
model alone makes those. Stochastic rounding uses a pure-Python Philox4x32-10 checked
against the Random123 known-answer vectors, with the mapping of src/util/rng.h's
contract: key = seed (lo, hi), counter = (index/4 lo, index/4 hi, stream lo, stream
hi), word = lane index%4; element (r, c) of a rows x cols matrix uses index r*cols+c.

Also prints how often rceil computed through float32 division differs from the exact
rule (for docs/mx.md).

Usage: python3 scripts/peer/mx_vectors.py OUT.bin [--no-torch]
(--no-torch: exact model only, for a dry run where PyTorch is absent; the committed
fixture was made with PyTorch, see tests/fixtures/mx/README.md.)

File layout (little endian):
  char[4] "MXTV"; u32 version (1); u32 number of cases; then per case:
  u8 len + name; u8 len + format (mxrlhf canonical name); u8 len + rounding;
  u8 len + scale rule; u32 block; u8 axis (0 rows, 1 columns); u32 rows; u32 cols;
  u64 seed; u64 stream; f32[rows*cols] input; f32[rows*cols] expected (NaN blocks as
  0x7fc00000; zeros carry the input's sign); u32 n, u8[n] scales (E8M0; [rows][ceil(cols/k)]
  for row blocks, [ceil(rows/k)][cols] for column blocks); u32 n, u8[n] element bytes
  (packed as mxrlhf's safetensors dtypes: F8 one per byte, F6 four per three bytes
  little-endian bit stream, F4 two per byte low nibble first, I8 two's complement one
  per byte; bf16/fp16 cases: the 16-bit codes, little endian; no scales).
"""
import math
import struct
import sys
from fractions import Fraction

import numpy as np

HAVE_TORCH = "--no-torch" not in sys.argv
if HAVE_TORCH:
    import torch

# name -> (kind, bits, emin, m, emax, max_norm, bias)
FORMATS = {
    "mxfp8_e4m3": ("fp", 8, -6, 3, 8, Fraction(448), 7),
    "mxfp8_e5m2": ("fp", 8, -14, 2, 15, Fraction(57344), 15),
    "mxfp6_e3m2": ("fp", 6, -2, 2, 4, Fraction(28), 3),
    "mxfp6_e2m3": ("fp", 6, 0, 3, 2, Fraction(15, 2), 1),
    "mxfp4_e2m1": ("fp", 4, 0, 1, 2, Fraction(6), 1),
    "mxint8": ("int", 8, 0, 6, 0, Fraction(127, 64), None),
    "mxint4": ("int", 4, 0, 2, 0, Fraction(7, 4), None),
}

# ---------------------------------------------------------------- Philox4x32-10
M32 = 0xFFFFFFFF


def philox4x32_10(ctr, key):
    c0, c1, c2, c3 = ctr
    k0, k1 = key
    for _ in range(10):
        p0 = 0xD2511F53 * c0
        p1 = 0xCD9E8D57 * c2
        c0, c1, c2, c3 = ((p1 >> 32) ^ c1 ^ k0) & M32, p1 & M32, ((p0 >> 32) ^ c3 ^ k1) & M32, p0 & M32
        k0 = (k0 + 0x9E3779B9) & M32
        k1 = (k1 + 0xBB67AE85) & M32
    return (c0, c1, c2, c3)


KAT = [  # Random123 tests/kat_vectors, "philox4x32 10" lines
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((M32,) * 4, (M32, M32), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]
for _c, _k, _want in KAT:
    assert philox4x32_10(_c, _k) == _want, "Philox KAT failed"

_rng_cache = {}


def rng_u32(seed, stream, index):
    blk = index >> 2
    key = (seed, stream, blk)
    if key not in _rng_cache:
        _rng_cache[key] = philox4x32_10(
            (blk & M32, blk >> 32, stream & M32, stream >> 32), (seed & M32, seed >> 32))
    return _rng_cache[key][index & 3]

# ---------------------------------------------------------------- exact model


def floor_log2(a):
    """floor(log2(a)) for a positive Fraction, exactly."""
    n, d = a.numerator, a.denominator
    e = n.bit_length() - d.bit_length()
    if (n << max(0, -e)) < (d << max(0, e)):
        e -= 1
    return e


def pow2(e):
    return Fraction(2) ** e


def scale_exp(fmt, rule, xs):
    """E8M0 exponent of a block; None for a block holding Inf or NaN."""
    if any(not math.isfinite(x) for x in xs):
        return None
    amax = max(abs(Fraction(x)) for x in xs)
    if amax == 0:
        return -127
    _, _, _, _, emax, mx, _ = FORMATS[fmt]
    if rule == "floor":  # OCP v1.0: floor(log2(amax)) - emax
        s = floor_log2(amax) - emax
    else:  # rceil: the smallest s with 2^s >= amax / max
        q = amax / mx
        s = floor_log2(q)
        if pow2(s) < q:
            s += 1
    return max(-127, min(127, s))


def quant_elem(fmt, rnd, y, u):
    """Round y (Fraction, = x / 2^s) to the element grid; returns a Fraction."""
    _, _, emin, m, _, mx, _ = FORMATS[fmt]
    if y == 0:
        return Fraction(0)
    a = abs(y)
    qe = max(floor_log2(a), emin) - m  # quantum: subnormals kept
    t = a / pow2(qe)
    fl = t.numerator // t.denominator
    fr = t - fl
    if rnd == "nearest":  # ties away from zero
        r = fl + (1 if fr >= Fraction(1, 2) else 0)
    elif rnd == "even":
        r = fl + (1 if fr > Fraction(1, 2) or (fr == Fraction(1, 2) and fl % 2 == 1) else 0)
    elif rnd == "trunc":
        r = fl
    else:  # stochastic: top 32 bits of the fraction plus the random word, carry = up
        frac32 = (fr * (1 << 32)).numerator // (fr * (1 << 32)).denominator
        r = fl + (1 if frac32 + u >= (1 << 32) else 0)
    v = min(r * pow2(qe), mx)  # saturate
    return -v if y < 0 else v


def elem_code(fmt, v, negative):
    kind, bits, emin, m, _, _, bias = FORMATS[fmt]
    if kind == "int":
        n = v * (1 << m)
        assert n.denominator == 1 and abs(n) < (1 << (bits - 1))
        return int(n) & 0xFF
    sign = 1 if negative else 0
    a = abs(v)
    if a == 0:
        mag = 0
    else:
        e = floor_log2(a)
        if e >= emin:
            mant = (a / pow2(e) - 1) * (1 << m)
            assert mant.denominator == 1
            mag = ((e + bias) << m) | int(mant)
        else:
            mant = a / pow2(emin - m)
            assert mant.denominator == 1
            mag = int(mant)
    return (sign << (bits - 1)) | mag


def to_f32(v, negative):
    if abs(v) >= pow2(128):  # an MX value past float32's range (rceil only): IEEE gives Inf
        return np.float32(-np.inf if v < 0 else np.inf)
    f = np.float32(float(v))
    assert Fraction(float(f)) == v, "not exactly representable"
    if v == 0 and negative:
        f = np.float32(-0.0)
    return f


def is_neg(x):
    return math.copysign(1.0, float(x)) < 0


def pack(fmt, codes):
    bits = FORMATS[fmt][1] if fmt in FORMATS else 16
    if fmt in ("mxint8", "mxint4") or bits == 8:
        return bytes(codes)
    if bits == 4:
        out = bytearray()
        for i in range(0, len(codes), 2):
            lo = codes[i] & 0xF
            hi = (codes[i + 1] & 0xF) if i + 1 < len(codes) else 0
            out.append(lo | hi << 4)
        return bytes(out)
    if bits == 6:
        acc, nbits, out = 0, 0, bytearray()
        for c in codes:
            acc |= (c & 0x3F) << nbits
            nbits += 6
            while nbits >= 8:
                out.append(acc & 0xFF)
                acc >>= 8
                nbits -= 8
        if nbits:
            out.append(acc & 0xFF)
        return bytes(out)
    raise ValueError(fmt)


def blocks_of(rows, cols, axis, k):
    """Yields (scale index, [flat indices]) in scale-array order."""
    if axis == 0:
        nb = (cols + k - 1) // k
        for r in range(rows):
            for b in range(nb):
                yield r * nb + b, [r * cols + c for c in range(b * k, min(cols, b * k + k))]
    else:
        ng = (rows + k - 1) // k
        for g in range(ng):
            for c in range(cols):
                yield g * cols + c, [r * cols + c for r in range(g * k, min(rows, g * k + k))]


def mx_case(fmt, rnd, rule, k, axis, x, rows, cols, seed, stream):
    n = rows * cols
    out = np.zeros(n, np.float32)
    codes = [0] * n
    scales = bytearray((rows * ((cols + k - 1) // k)) if axis == 0 else (((rows + k - 1) // k) * cols))
    for si, idx in blocks_of(rows, cols, axis, k):
        xs = [float(x[i]) for i in idx]
        s = scale_exp(fmt, rule, xs)
        if s is None:
            scales[si] = 0xFF
            for i in idx:
                out[i] = np.float32("nan")
                codes[i] = 0
            continue
        scales[si] = s + 127
        for i in idx:
            y = Fraction(float(x[i])) / pow2(s)
            u = rng_u32(seed, stream, i) if rnd == "stochastic" else 0
            q = quant_elem(fmt, rnd, y, u)
            neg = is_neg(x[i])
            out[i] = to_f32(q * pow2(s), neg)
            codes[i] = elem_code(fmt, q, neg)
    return out, bytes(scales), pack(fmt, codes), codes

# ---------------------------------------------------------------- plain casts


def cast_model(x, p, emin, emax):
    """IEEE binary format with p significand bits: RNE, overflow to Inf."""
    if math.isnan(x):
        return float("nan")
    if math.isinf(x) or x == 0:
        return x
    a = abs(Fraction(x))
    qe = max(floor_log2(a), emin) - (p - 1)
    t = a / pow2(qe)
    fl = t.numerator // t.denominator
    fr = t - fl
    r = fl + (1 if fr > Fraction(1, 2) or (fr == Fraction(1, 2) and fl % 2 == 1) else 0)
    v = r * pow2(qe)
    mx = (2 - pow2(1 - p)) * pow2(emax)
    res = float("inf") if v > mx else float(v)
    return -res if x < 0 else (res if v != 0 or x > 0 else 0.0)


def cast_case(name, x):
    p, emin, emax = (8, -126, 127) if name == "bf16" else (11, -14, 15)
    out = np.array([cast_model(float(v), p, emin, emax) for v in x], np.float32)
    for i, v in enumerate(x):  # zeros keep the sign
        if out[i] == 0 and is_neg(v):
            out[i] = np.float32(-0.0)
    if HAVE_TORCH:
        def check():
            dt = torch.bfloat16 if name == "bf16" else torch.float16
            t = torch.from_numpy(x.copy()).to(dt).float().numpy()
            same = (t.view(np.uint32) == out.view(np.uint32)) | (np.isnan(t) & np.isnan(out))
            bad = np.nonzero(~same)[0]
            assert len(bad) == 0, f"{name}: model and PyTorch differ at {bad[:5]}: {x[bad[:5]]}"
            CHECKS["cast values checked against torch"] += len(x)
        soft(f"{name} cast check", check)
    if name == "bf16":
        codes = (out.view(np.uint32) >> 16).astype(np.uint16)
    else:
        codes = out.astype(np.float16).view(np.uint16)  # exact: out is an fp16 value
    return out, codes.astype("<u2").tobytes()

# ---------------------------------------------------------------- inputs


def f32_next(v, up):
    return np.nextafter(np.float32(v), np.float32(np.inf if up else -np.inf), dtype=np.float32)


def line(j, fmt, L, rng):
    """Line j (a row for row blocks, a column for column blocks) of length L."""
    _, _, emin, m, emax, mx, _ = FORMATS[fmt]
    nrm = rng.standard_normal(L)
    if j == 0:
        v = nrm
    elif j == 1:
        v = nrm * 10.0 ** rng.uniform(-8, 8, L)
    elif j == 2:
        v = nrm * 1e-39  # float32 subnormals
    elif j == 3:
        v = nrm * 1e37
        v[5] = 3.4e38 * rng.uniform(0.9, 1.0)
        v[30] = -3.4e38 * rng.uniform(0.9, 1.0)
    elif j == 4:  # exact ties for many grids
        v = (rng.integers(-20, 20, L) + 0.5) * 2.0 ** rng.integers(-4, 5, L)
    elif j == 5:  # block maxima just below a power of two
        v = nrm * 0.25
        for p in range(0, L, 8):
            v[p] = (1 if rng.random() < 0.5 else -1) * 2.0 ** int(rng.integers(-3, 4)) * (
                1 - int(rng.integers(1, 5)) * 2.0 ** -24)
    elif j in (6, 7):  # rceil boundaries: amax at max * 2^e exactly, one ulp off, ...
        v = nrm * float(mx) * 2.0 ** -6
        es = [int(rng.integers(-5, 6)) for _ in range(5)] if j == 6 else [-140, -136, -131, 100, 60]
        for b, p in enumerate(range(0, L, 8)):
            base = np.float32(float(mx) * 2.0 ** es[b])
            kind = b % 5
            val = [base, f32_next(base, True), f32_next(base, False),
                   np.float32(float(base) * (1 + 2.0 ** -10)), np.float32(2.0 ** (emax + es[b]))][kind]
            v[p:p + 8] *= 2.0 ** es[b]
            v[p] = float(val) * (1 if j == 6 else -1)
    elif j == 8:  # Inf and NaN in some blocks
        v = nrm.copy()
        v[3], v[20], v[33] = np.inf, np.nan, -np.inf
    elif j == 9:  # one NaN, in the last (short) block only
        v = nrm.copy()
        v[L - 1] = np.nan
    elif j == 10:  # all-zero blocks with both zeros, one live block
        v = np.where(rng.random(L) < 0.5, 0.0, -0.0)
        v[16:24] = nrm[16:24]
    elif j == 11:
        v = np.where(rng.random(L) < 0.5, 0.0, nrm) * (1.0 + rng.standard_t(2, L) ** 2)
    elif j == 12:  # saturation: block max above max * 2^s under floor
        sh = 2.0 ** int(rng.integers(-10, 10))
        v = rng.uniform(0.9, 1.1, L) * float(mx) * sh * np.where(rng.random(L) < 0.5, 1, -1)
        for p in range(0, L, 8):
            v[p] = float(2 - 2.0 ** -(m + 2)) * 2.0 ** emax * sh
    elif j == 13:  # ties on the element subnormal grid (s = 0 blocks, shifted)
        sh = 2.0 ** int(rng.integers(-20, 20))
        v = (rng.integers(0, 2 ** (m + 1), L) + np.where(rng.random(L) < 0.7, 0.5, 0.0)) * \
            2.0 ** (emin - m) * np.where(rng.random(L) < 0.5, 1, -1)
        for p in range(0, L, 8):
            v[p] = 2.0 ** emax
        v = v * sh
    elif j == 14:  # tiny blocks: element normal range below float32's
        mult = [2.0 ** -100, 2.0 ** -115, 2.0 ** -122, 2.0 ** -126, 2.0 ** -140]
        v = np.concatenate([nrm[p:p + 8] * mult[b] for b, p in enumerate(range(0, L, 8))])
    else:  # random finite bit patterns
        b = rng.integers(0, 2 ** 32, L, dtype=np.uint64).astype(np.uint32)
        b = np.where((b & 0x7F800000) == 0x7F800000, b & 0xBFFFFFFF, b).astype(np.uint32)
        return b.view(np.float32)
    return np.asarray(v, np.float64).astype(np.float32)


def matrix(fmt, axis, seed):
    rng = np.random.default_rng(seed)
    L, nl = 36, 16
    lines = [line(j, fmt, L, rng) for j in range(nl)]
    mtx = np.stack(lines)  # nl x L: lines are rows
    if axis == 1:
        mtx = mtx.T.copy()  # L x nl: lines are columns
    return np.ascontiguousarray(mtx, np.float32)


def cast_inputs(name, seed):
    rng = np.random.default_rng(seed)
    vals = [0.0, -0.0, np.inf, -np.inf, np.nan, 1.0, -1.0]
    if name == "fp16":
        h = rng.integers(0, 0x7C00, 600).astype(np.uint16).view(np.float16).astype(np.float32)
        nxt = np.nextafter(h.astype(np.float16), np.float16(np.inf)).astype(np.float32)
        mids = (h.astype(np.float64) + nxt.astype(np.float64)) / 2
        vals += [65504, 65519.99, 65520, 65536, 2.0 ** -24, 2.0 ** -25, 3 * 2.0 ** -25,
                 2.0 ** -14, 2.0 ** -14 - 2.0 ** -25, 1e-8, 1e5, -1e5]
    else:
        h = (rng.integers(0, 0x7F80, 600).astype(np.uint32) << 16).view(np.float32)
        nxt = ((h.view(np.uint32) + (1 << 16)).astype(np.uint32)).view(np.float32)
        mids = (h.astype(np.float64) + nxt.astype(np.float64)) / 2
        vals += [3.4028235e38, 3.3895314e38, 3.3961776e38, 1e-45, 1e-40, 2.0 ** -133, 2.0 ** -134,
                 3 * 2.0 ** -134]
    mids = mids.astype(np.float32)
    x = np.concatenate([np.array(vals, np.float32), h, mids, f32_next(mids, True),
                        f32_next(mids, False), (rng.standard_normal(400) *
                                                10.0 ** rng.uniform(-12, 12, 400)).astype(np.float32),
                        (rng.standard_normal(100) * 1e-39).astype(np.float32)])
    sg = np.where(rng.random(len(x)) < 0.5, 1, -1).astype(np.float32)
    x[7:] *= sg[7:]
    return x.astype(np.float32)

# ---------------------------------------------------------------- torch checks


CHECKS = {"fp8 values checked against torch": 0, "fp8 codes checked against torch": 0,
          "fp8 casts on CUDA equal to CPU": 0, "e8m0 scale bytes checked against torch": 0,
          "fp4 codes decoded by torch float4_e2m1fn_x2": 0, "cast values checked against torch": 0}
NOTES = []


def fp4_torch_check(x_codes_bytes, out, scales, rows, cols, axis, k):
    """Decodes our packed F4 bytes with PyTorch's float4_e2m1fn_x2, where this PyTorch
    can convert it, and compares element * scale with the model's values."""
    if not hasattr(torch, "float4_e2m1fn_x2"):
        NOTES.append("torch has no float4_e2m1fn_x2: fp4 bytes checked by the model only")
        return
    try:
        t = torch.frombuffer(bytearray(x_codes_bytes), dtype=torch.uint8).view(torch.float4_e2m1fn_x2)
        vals = t.to(torch.float32).numpy().reshape(-1)
    except Exception as ex:  # no conversion kernel in this build
        msg = f"float4_e2m1fn_x2 -> float32 not available ({type(ex).__name__}): fp4 bytes checked by the model only"
        if msg not in NOTES:
            NOTES.append(msg)
        return
    assert len(vals) >= rows * cols
    for si, idx in blocks_of(rows, cols, axis, k):
        if scales[si] == 0xFF:
            continue
        s = scales[si] - 127
        for i in idx:
            want = float(out[i])
            got = float(vals[i]) * 2.0 ** s
            assert got == want or (math.isinf(want) and got >= 2.0 ** 128), (i, got, want)
            CHECKS["fp4 codes decoded by torch float4_e2m1fn_x2"] += 1


def soft(what, fn):
    """Runs a PyTorch check; a missing capability becomes a note, a disagreement
    (AssertionError) still aborts the run."""
    try:
        fn()
    except AssertionError:
        raise
    except Exception as ex:  # e.g. a conversion this PyTorch build lacks
        msg = f"{what} skipped: {type(ex).__name__}: {str(ex).splitlines()[0][:120]}"
        if msg not in NOTES:
            NOTES.append(msg)


def torch_check(fmt, rnd, rule, k, axis, x, rows, cols, out, scales, codes):
    soft("e8m0 check", lambda: e8m0_check(fmt, scales))
    if rnd == "even" and fmt in ("mxfp8_e4m3", "mxfp8_e5m2"):
        soft("fp8 check", lambda: fp8_check(fmt, rule, k, axis, x, rows, cols, out, scales, codes))


def e8m0_check(fmt, scales):
    # Scales: encode the exact power of two with float8_e8m0fnu; decode back.
    sb = np.frombuffer(scales, np.uint8)
    live = sb != 0xFF
    pw = np.array([2.0 ** (int(b) - 127) for b in sb[live]], np.float64).astype(np.float32)
    enc = torch.from_numpy(pw).to(torch.float8_e8m0fnu).view(torch.uint8).numpy()
    assert (enc == sb[live]).all(), f"{fmt}: e8m0 encode differs"
    dec = torch.from_numpy(sb.copy()).view(torch.float8_e8m0fnu).float().numpy()
    assert (dec[live] == pw).all() and np.isnan(dec[~live]).all(), f"{fmt}: e8m0 decode differs"
    CHECKS["e8m0 scale bytes checked against torch"] += len(sb)


def fp8_check(fmt, rule, k, axis, x, rows, cols, out, scales, codes):
    dt = torch.float8_e4m3fn if fmt == "mxfp8_e4m3" else torch.float8_e5m2
    mx = float(FORMATS[fmt][5])
    for si, idx in blocks_of(rows, cols, axis, k):
        if scales[si] == 0xFF:
            continue
        s = scales[si] - 127
        y = np.array([float(x[i]) * 2.0 ** -s for i in idx])  # exact in float64
        y = np.clip(y, -mx, mx).astype(np.float32)  # the casts do not saturate
        t = torch.from_numpy(y).to(dt)
        if torch.cuda.is_available():
            def gpu():
                tc_gpu = torch.from_numpy(y).cuda().to(dt).view(torch.uint8).cpu()
                assert torch.equal(tc_gpu, t.view(torch.uint8)), f"{fmt}: CUDA and CPU casts differ"
                CHECKS["fp8 casts on CUDA equal to CPU"] += len(idx)
            soft("CUDA fp8 cast", gpu)
        with np.errstate(over="ignore"):
            tv = (t.float().numpy().astype(np.float64) * 2.0 ** s).astype(np.float32)
        got = out[idx]
        assert (tv == got).all(), f"{fmt} {rule} block {si}: torch {tv} model {got}"
        tc = t.view(torch.uint8).numpy()
        want = np.array([codes[i] for i in idx], np.uint8)
        assert (tc == want).all(), f"{fmt} {rule} block {si}: torch codes {tc} model {want}"
        CHECKS["fp8 values checked against torch"] += len(idx)
        CHECKS["fp8 codes checked against torch"] += len(idx)

# ---------------------------------------------------------------- rceil note


def rceil_division_study(rng):
    """Counts blocks where rceil through float32 division (amax / max, then the
    exponent rounded up) differs from the exact rule, on random float32 maxima."""
    print("rceil: exact rule vs float32 division (2^20 random finite float32 amax + boundaries)")
    bits = rng.integers(1, 0x7F800000, 1 << 20, dtype=np.uint64).astype(np.uint32)
    amax = bits.view(np.float32)
    for fmt, (_, _, _, _, emax, mx, _) in FORMATS.items():
        mx32 = np.float32(float(mx))
        bnd = np.array([float(mx) * 2.0 ** e for e in range(-149 - emax, 127 - emax)], np.float64)
        bnd = bnd[(bnd > 0) & (bnd < 3.4e38)].astype(np.float32)
        bnd = bnd[bnd > 0]
        cand = np.concatenate([amax, bnd, f32_next(bnd, True), f32_next(bnd, False)])
        cand = cand[(cand > 0) & np.isfinite(cand)]
        # exact: s = e - emax + (mantissa(amax) > mantissa(max)), on the bits
        m, e = np.frexp(cand.astype(np.float64))  # exact for float32 inputs
        mm, _ = np.frexp(float(mx))
        exact = (e - 1) - emax + ((m * 2) > (mm * 2)).astype(np.int64)
        exact = np.clip(exact, -127, 127)
        for variant in ("divide", "reciprocal"):
            with np.errstate(under="ignore"):
                q = cand / mx32 if variant == "divide" else cand * np.float32(1 / mx32)
            q = q.astype(np.float32)
            qm, qe = np.frexp(q.astype(np.float64))
            ceil = np.where(q == 0, -127, (qe - 1) + (qm != 0.5).astype(np.int64))
            ceil = np.clip(ceil, -127, 127)
            diff = ceil != exact
            nd = int(diff.sum())
            ex = ""
            if nd:
                i = int(np.nonzero(diff)[0][0])
                ex = f" e.g. amax={float(cand[i]):.9g} exact s={exact[i]} {variant} s={ceil[i]}"
                small = int((diff & (cand < np.float32(float(mx) * 2.0 ** -126))).sum())
                ex += f"; {small} of them with amax/max below 2^-126"
            print(f"  {fmt:11s} {variant:10s}: {nd} of {len(cand)} differ{ex}")


def main():
    if len(sys.argv) < 2 or sys.argv[1].startswith("--"):
        sys.exit(__doc__)
    path = sys.argv[1]
    if HAVE_TORCH:
        dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
        print(f"torch {torch.__version__}, numpy {np.__version__}, {dev}")
    else:
        print(f"numpy {np.__version__}; NO torch (dry run: exact model only)")
    cases = []
    cid = 0
    for fi, fmt in enumerate(FORMATS):
        for rule in ("floor", "rceil"):
            for rnd in ("nearest", "even", "trunc", "stochastic"):
                combos = [(0, 8), (0, 32), (1, 16)] if rnd != "stochastic" else [(0, 32), (1, 8)]
                for axis, k in combos:
                    cid += 1
                    x = matrix(fmt, axis, 1000 + fi * 10 + axis)
                    rows, cols = x.shape
                    seed = (0x9E3779B97F4A7C15 * cid) & ((1 << 64) - 1) if rnd == "stochastic" else 0
                    stream = (cid * 7919 + 3) if rnd == "stochastic" else 0
                    flat = x.reshape(-1)
                    out, scales, elems, codes = mx_case(fmt, rnd, rule, k, axis, flat, rows, cols,
                                                        seed, stream)
                    if HAVE_TORCH:
                        torch_check(fmt, rnd, rule, k, axis, flat, rows, cols, out, scales, codes)
                        if fmt == "mxfp4_e2m1":
                            soft("fp4 check", lambda: fp4_torch_check(elems, out, scales, rows,
                                                                      cols, axis, k))
                    name = f"{fmt}/{k}/{rnd}/{rule}/{'rows' if axis == 0 else 'cols'}"
                    cases.append((name, fmt, rnd, rule, k, axis, rows, cols, seed, stream, flat, out,
                                  scales, elems))
    for ci, name in enumerate(("bf16", "fp16")):
        x = cast_inputs(name, 77 + ci)
        out, elems = cast_case(name, x)
        cases.append((name + "/cast", name, "even", "floor", 1, 0, 1, len(x), 0, 0, x, out, b"",
                      elems))
    blob = bytearray(b"MXTV" + struct.pack("<II", 1, len(cases)))
    for (name, fmt, rnd, rule, k, axis, rows, cols, seed, stream, x, out, scales, elems) in cases:
        for s in (name, fmt, rnd, rule):
            blob += struct.pack("<B", len(s)) + s.encode()
        blob += struct.pack("<IBIIQQ", k, axis, rows, cols, seed, stream)
        blob += np.asarray(x, "<f4").tobytes() + np.asarray(out, "<f4").tobytes()
        blob += struct.pack("<I", len(scales)) + scales + struct.pack("<I", len(elems)) + elems
    with open(path, "wb") as f:
        f.write(blob)
    print(f"wrote {path}: {len(cases)} cases, {sum(c[6] * c[7] for c in cases)} values, "
          f"{len(blob)} bytes")
    for k, v in CHECKS.items():
        print(f"  {k}: {v}")
    for n in NOTES:
        print(f"  note: {n}")
    rceil_division_study(np.random.default_rng(5))


if __name__ == "__main__":
    main()
