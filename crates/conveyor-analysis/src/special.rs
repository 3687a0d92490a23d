//! Special functions shared by the statistical modules: the standard normal distribution.
//!
//! The CDF goes through `erfc` (from `libm`) rather than `1 + erf`, so tail probabilities keep
//! their relative precision; the quantile is Wichura's AS 241 (PPND16), the algorithm behind R's
//! `qnorm`, accurate to about 1e-16.

/// P(Z ≤ z) for a standard normal Z.
pub fn normal_cdf(z: f64) -> f64 {
    0.5 * libm::erfc(-z / std::f64::consts::SQRT_2)
}

/// P(Z > z) for a standard normal Z, without the cancellation of `1 - normal_cdf(z)`.
pub fn normal_sf(z: f64) -> f64 {
    0.5 * libm::erfc(z / std::f64::consts::SQRT_2)
}

/// The z with P(Z ≤ z) = p: −∞ at 0, +∞ at 1, NaN outside [0, 1].
pub fn normal_quantile(p: f64) -> f64 {
    if p.is_nan() || !(0.0..=1.0).contains(&p) {
        return f64::NAN;
    }
    if p == 0.0 {
        return f64::NEG_INFINITY;
    }
    if p == 1.0 {
        return f64::INFINITY;
    }
    let q = p - 0.5;
    if q.abs() <= 0.425 {
        let r = 0.180625 - q * q;
        return q * horner(&as241::A, r) / horner(&as241::B, r);
    }
    let tail = if q < 0.0 { p } else { 1.0 - p };
    let r = (-tail.ln()).sqrt();
    let magnitude = if r <= 5.0 {
        let r = r - 1.6;
        horner(&as241::C, r) / horner(&as241::D, r)
    } else {
        let r = r - 5.0;
        horner(&as241::E, r) / horner(&as241::F, r)
    };
    if q < 0.0 { -magnitude } else { magnitude }
}

/// Evaluates c[0] + c[1]·x + … + c[n]·xⁿ.
fn horner(coefficients: &[f64; 8], x: f64) -> f64 {
    coefficients.iter().rev().fold(0.0, |acc, &c| acc * x + c)
}

// === AS 241 coefficients ===

/// Wichura 1988, Applied Statistics 37(3), 477–484, digits as published.
#[allow(
    clippy::excessive_precision,
    reason = "the published digits are the reference"
)]
mod as241 {

    pub(super) const A: [f64; 8] = [
        3.387_132_872_796_366_608,
        133.141_667_891_784_377_45,
        1_971.590_950_306_551_442_7,
        13_731.693_765_509_461_125,
        45_921.953_931_549_871_457,
        67_265.770_927_008_700_853,
        33_430.575_583_588_128_105,
        2_509.080_928_730_122_672_7,
    ];
    pub(super) const B: [f64; 8] = [
        1.0,
        42.313_330_701_600_911_252,
        687.187_007_492_057_908_3,
        5_394.196_021_424_751_107_7,
        21_213.794_301_586_595_867,
        39_307.895_800_092_710_61,
        28_729.085_735_721_942_674,
        5_226.495_278_852_854_561,
    ];
    pub(super) const C: [f64; 8] = [
        1.423_437_110_749_683_577_34,
        4.630_337_846_156_545_295_9,
        5.769_497_221_460_691_405_5,
        3.647_848_324_763_204_605_04,
        1.270_458_252_452_368_382_58,
        0.241_780_725_177_450_611_77,
        0.022_723_844_989_269_184_583_3,
        7.745_450_142_783_414_076_4e-4,
    ];
    pub(super) const D: [f64; 8] = [
        1.0,
        2.053_191_626_637_758_821_87,
        1.676_384_830_183_803_849_4,
        0.689_767_334_985_100_004_55,
        0.148_103_976_427_480_074_59,
        0.015_198_666_563_616_457_196_6,
        5.475_938_084_995_344_946e-4,
        1.050_750_071_644_416_843_24e-9,
    ];
    pub(super) const E: [f64; 8] = [
        6.657_904_643_501_103_777_2,
        5.463_784_911_164_114_369_9,
        1.784_826_539_917_291_335_8,
        0.296_560_571_828_504_891_23,
        0.026_532_189_526_576_123_093,
        0.001_242_660_947_388_078_438_6,
        2.711_555_568_743_487_578_15e-5,
        2.010_334_399_292_288_132_65e-7,
    ];
    pub(super) const F: [f64; 8] = [
        1.0,
        0.599_832_206_555_887_937_69,
        0.136_929_880_922_735_805_31,
        0.014_875_361_290_850_614_852_5,
        7.868_691_311_456_132_591e-4,
        1.846_318_317_510_054_681_8e-5,
        1.421_511_758_316_445_888_7e-7,
        2.044_263_103_389_939_785_64e-15,
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_close(actual: f64, expected: f64, relative: f64) {
        let scale = expected.abs().max(f64::MIN_POSITIVE);
        assert!(
            ((actual - expected) / scale).abs() <= relative,
            "{actual} differs from {expected} by more than {relative} relative"
        );
    }

    /// Reference values from R 4.2 (`pnorm`, `qnorm`, printed with 17 significant digits).
    #[test]
    #[allow(clippy::excessive_precision, reason = "R's 17-digit output, kept as printed")]
    fn normal_functions_match_r() {
        let cdf = [
            (-1.96, 0.024997895148220428),
            (0.0, 0.5),
            (1.0, 0.84134474606854293),
            (-8.0, 6.2209605742717849e-16),
            (-37.5, 4.6053530095819552e-308),
        ];
        for (z, p) in cdf {
            let tolerance = if z < -30.0 { 1e-12 } else { 1e-14 };
            assert_close(normal_cdf(z), p, tolerance);
            assert_close(normal_sf(-z), p, tolerance);
        }
        let quantiles = [
            (0.01, -2.3263478740408408),
            (0.025, -1.9599639845400538),
            (0.5, 0.0),
            (0.9, 1.2815515655446008),
            (1e-10, -6.3613409024040557),
            (1e-300, -37.0470962993612),
        ];
        for (p, z) in quantiles {
            if z == 0.0 {
                assert_eq!(normal_quantile(p), 0.0);
            } else {
                assert_close(normal_quantile(p), z, 1e-14);
            }
        }
    }

    #[test]
    fn quantile_inverts_cdf_and_handles_edges() {
        for p in [1e-12, 0.001, 0.07, 0.3, 0.5, 0.77, 0.99, 1.0 - 1e-9] {
            assert_close(normal_cdf(normal_quantile(p)), p, 1e-12);
        }
        assert_eq!(normal_quantile(0.0), f64::NEG_INFINITY);
        assert_eq!(normal_quantile(1.0), f64::INFINITY);
        assert!(normal_quantile(1.5).is_nan());
        assert!(normal_quantile(f64::NAN).is_nan());
    }
}
