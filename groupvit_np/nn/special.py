"""erf, which the Array API lacks and GroupViT's vision GELU needs in its exact form (not the tanh approximation).

float64 takes the piecewise rational approximations of Sun's fdlibm `s_erf.c`, within an ulp; float32 takes the
single rational function Eigen and XLA use, a few float32 ulp. `half_erf_float32` is that float32 rational with
GELU's 1/2 and 1/sqrt(2) folded into its coefficients.
"""

from __future__ import annotations

import math
from itertools import zip_longest
from typing import Any

from ..backend import boolean_indexing, namespace, writes_in_place


def _horner(z: Any, coefs: tuple[float, ...]) -> Any:
    """c0 + z*(c1 + z*(c2 + ...)) for two or more coefficients, Python floats broadcast into z's dtype.

    One accumulator is allocated and updated in place: the same roundings as c + z*acc, without a temporary per
    coefficient.
    """
    acc = z * coefs[-1]
    for c in reversed(coefs[1:-1]):
        acc += c
        acc *= z
    acc += coefs[0]
    return acc


# Coefficients of the piecewise rational approximations in Sun's fdlibm `s_erf.c` (public, 1993). Each piece is
# accurate to within an ulp in double precision on its interval; the structure below is ours.
_ERF_SMALL_P = (1.28379167095512558561e-01, -3.25042107247001499370e-01, -2.84817495755985104766e-02,
                -5.77027029648944159157e-03, -2.37630166566501626084e-05)  # fmt: skip
_ERF_SMALL_Q = (1.0, 3.97917223959155352819e-01, 6.50222499887672944485e-02, 5.08130628187576562776e-03,
                1.32494738004321644526e-04, -3.96022827877536812320e-06)  # fmt: skip
_ERF_MID_C = 8.45062911510467529297e-01  # erf(1) rounded to float32: the mid piece approximates erf(x) - this
_ERF_MID_P = (-2.36211856075265944077e-03, 4.14856118683748331666e-01, -3.72207876035701323847e-01,
              3.18346619901161753674e-01, -1.10894694282396677476e-01, 3.54783043256182359371e-02,
              -2.16637559486879084300e-03)  # fmt: skip
_ERF_MID_Q = (1.0, 1.06420880400844228286e-01, 5.40397917702171048937e-01, 7.18286544141962662868e-02,
              1.26171219808761642112e-01, 1.36370839120290507362e-02, 1.19844998467991074170e-02)  # fmt: skip
_ERFC_A_R = (-9.86494403484714822705e-03, -6.93858572707181764372e-01, -1.05586262253232909814e+01,
             -6.23753324503260060396e+01, -1.62396669462573470355e+02, -1.84605092906711035994e+02,
             -8.12874355063065934246e+01, -9.81432934416914548592e+00)  # fmt: skip
_ERFC_A_S = (1.0, 1.96512716674392571292e+01, 1.37657754143519042600e+02, 4.34565877475229228821e+02,
             6.45387271733267880336e+02, 4.29008140027567833386e+02, 1.08635005541779435134e+02,
             6.57024977031928170135e+00, -6.04244152148580987438e-02)  # fmt: skip
_ERFC_B_R = (-9.86494292470009928597e-03, -7.99283237680523006574e-01, -1.77579549177547519889e+01,
             -1.60636384855821916062e+02, -6.37566443368389627722e+02, -1.02509513161107724954e+03,
             -4.83519191608651397019e+02)  # fmt: skip
_ERFC_B_S = (1.0, 3.03380607434824582924e+01, 3.25792512996573918826e+02, 1.53672958608443695994e+03,
             3.19985821950859553908e+03, 2.55305040643316442583e+03, 4.74528541206955367215e+02,
             -2.24409524465858183362e+01)  # fmt: skip
_ERFC_A, _ERFC_B = (_ERFC_A_R, _ERFC_A_S), (_ERFC_B_R, _ERFC_B_S)  # [1.25, 1/0.35) and [1/0.35, 6)


def _erf_small(x: Any) -> Any:  # |x| < 0.84375: x + x * P/Q(x^2)
    z = x * x
    return x + x * (_horner(z, _ERF_SMALL_P) / _horner(z, _ERF_SMALL_Q))


def _erf_mid(a: Any) -> Any:  # 0.84375 <= |x| < 1.25: c + P/Q(|x| - 1)
    s = a - 1.0
    return _ERF_MID_C + _horner(s, _ERF_MID_P) / _horner(s, _ERF_MID_Q)


def _erf_tail(a: Any, rational: tuple[tuple[float, ...], tuple[float, ...]]) -> Any:  # 1.25 <= |x| < 6
    xp = namespace(a)
    w = 1.0 / (a * a)
    ratio = _horner(w, rational[0]) / _horner(w, rational[1])
    # exp(-x^2) = exp(-h^2) * exp((h - x)(h + x)) with h = x rounded to float32: h*h is exact in float64.
    h = xp.astype(xp.astype(a, xp.float32), a.dtype) if a.dtype == xp.float64 else a
    return 1.0 - xp.exp(-h * h - 0.5625) * xp.exp((h - a) * (h + a) + ratio) / a


# float32: one rational function on x clamped to [-4, 4], the approximation Eigen and XLA use for float erf
# (erf(4) rounds to 1 in float32). No exp, no branches: about 20 elementwise passes.
_ERF32_ALPHA = (-1.60960333262415e-02, -2.95459980854025e-03, -7.34990630326855e-04, -5.69250639462346e-05,
                -2.10102402082508e-06, 2.77068142495902e-08, -2.72614225801306e-10)  # fmt: skip
_ERF32_BETA = (-1.42647390514189e-02, -7.37332916720468e-03, -1.68282697438203e-03, -2.13374055278905e-04,
               -1.45660718464996e-05)  # fmt: skip


def _odd_rational(x: Any, clamp: float, num: tuple[float, ...], den: tuple[float, ...], bound: float) -> Any:
    """c * num(c^2) / den(c^2) with c = x clipped to [-clamp, clamp], the result clipped to [-bound, bound]."""
    xp = namespace(x)
    c = xp.clip(x, -clamp, clamp)
    z = c * c
    p = _horner(z, num)
    p *= c
    p /= _horner(z, den)
    return xp.clip(p, -bound, bound)


def _erf_float32(x: Any) -> Any:
    return _odd_rational(x, 4.0, _ERF32_ALPHA, _ERF32_BETA, 1.0)


# GELU in float32 uses the same rational with x/sqrt(2) and the 1/2 of 1/2 (1 + erf) folded into the coefficients:
# 1/2 erf(x/sqrt 2) = x * A(x^2) / B(x^2), with A_k = alpha_k / (2 sqrt 2 * 2^k) and B_k = beta_k / 2^k.
_GELU32_A = tuple(a / (2.0 * math.sqrt(2.0) * 2.0**k) for k, a in enumerate(_ERF32_ALPHA))
_GELU32_B = tuple(b / 2.0**k for k, b in enumerate(_ERF32_BETA))
_GELU32_CLAMP = 4.0 * math.sqrt(2.0)


def erf(x: Any) -> Any:
    """The error function, elementwise: within an ulp in float64 (max rel. error <= 1e-15 vs math.erf); float32
    inputs take Eigen's single rational approximation (a few float32 ulp) for speed.

    Pieces on |x|: [0, 0.84375) x + x*P/Q(x^2); [0.84375, 1.25) c + P/Q(|x|-1); [1.25, 1/0.35) and [1/0.35, 6)
    1 - exp(-x^2)*R/S(1/x^2)/x; [6, inf) 1. Where arrays accept writes and boolean masks, each piece runs only on
    its own elements, so the cost is one rational function per element. Elsewhere (JAX) pieces run on every
    element, clamped into their interval so that none overflows (nor its gradient), and `where` picks; the two
    tails share one evaluation with per-element coefficients (a zero on top of the shorter polynomial changes no
    rounding). The same values either way. Example: erf(0.5) = 0.5204998778130465.
    """
    xp = namespace(x)
    if x.dtype == xp.float32:
        return _erf_float32(x)
    a = xp.abs(x)  # [...] like x
    small, mid = a < 0.84375, (a >= 0.84375) & (a < 1.25)  # [...] bool each
    if writes_in_place(x) and boolean_indexing(xp):
        mag = xp.ones_like(x)  # |x| >= 6 (and inf): erf is 1 to double precision
        mag[small] = _erf_small(a[small])
        mag[mid] = _erf_mid(a[mid])
        for mask, rational in (((a >= 1.25) & (a < 1 / 0.35), _ERFC_A), ((a >= 1 / 0.35) & (a < 6.0), _ERFC_B)):
            mag[mask] = _erf_tail(a[mask], rational)
        nan = xp.isnan(x)
        mag[nan] = x[nan]
        return xp.copysign(mag, x)  # odd function; keeps erf(-0.0) = -0.0
    far, far_b = (a >= 1.25) & (a < 6.0), a >= 1 / 0.35  # [...] bool each
    rational = tuple(
        tuple(xp.where(far_b, xp.full_like(a, b), c) for c, b in zip_longest(*pair, fillvalue=0.0))
        for pair in zip(_ERFC_A, _ERFC_B, strict=True)
    )  # R and S coefficients of each element's tail, [...] each
    mag = xp.where(xp.isnan(x), x, xp.ones_like(x))  # [...] like x: |x| >= 6 gives 1, NaN stays NaN
    mag = xp.where(far, _erf_tail(xp.clip(a, 1.25, 6.0), rational), mag)  # [...]
    mag = xp.where(mid, _erf_mid(xp.clip(a, 0.84375, 1.25)), mag)  # [...]
    mag = xp.where(small, _erf_small(xp.clip(a, 0.0, 0.84375)), mag)  # [...]
    return xp.copysign(mag, x)


def half_erf_float32(x: Any) -> Any:
    """1/2 erf(x / sqrt(2)) for float32 x: the inner term of GELU, from the float32 rational with the constants folded
    into its coefficients (fewer passes than scaling x, then halving erf).  # [...] -> [...]"""
    return _odd_rational(x, _GELU32_CLAMP, _GELU32_A, _GELU32_B, 0.5)
