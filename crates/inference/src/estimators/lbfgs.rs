//! Limited-memory BFGS minimisation of a smooth function (what scikit-learn's `lbfgs` solver does for logistic
//! regression): the two-loop recursion over the last few steps gives a quasi-Newton direction, and a backtracking
//! line search enforces sufficient decrease. It converges in a few dozen iterations where plain gradient descent
//! crawls on badly scaled features.

use std::collections::VecDeque;

/// Steps remembered.
const MEMORY: usize = 10;

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The two-loop recursion: `d = -H g`, with H the inverse Hessian estimated from the remembered steps.
fn direction(
    steps: &VecDeque<(Vec<f64>, Vec<f64>, f64)>,
    g: &[f64],
    d: &mut [f64],
    alpha: &mut [f64; MEMORY],
) {
    d.copy_from_slice(g);
    for (i, (s, y, rho)) in steps.iter().enumerate().rev() {
        alpha[i] = rho * dot(s, d);
        for (dj, yj) in d.iter_mut().zip(y) {
            *dj -= alpha[i] * yj;
        }
    }
    if let Some((s, y, _)) = steps.back() {
        let gamma = dot(s, y) / dot(y, y);
        d.iter_mut().for_each(|v| *v *= gamma);
    }
    for (i, (s, y, rho)) in steps.iter().enumerate() {
        let beta = rho * dot(y, d);
        for (dj, sj) in d.iter_mut().zip(s) {
            *dj += (alpha[i] - beta) * sj;
        }
    }
    d.iter_mut().for_each(|v| *v = -*v);
}

/// Minimises `f` from `x`, where `f(x, grad)` returns the value and writes the gradient. Stops when the largest
/// gradient component is below `gtol`, when a step no longer decreases the value, or after `max_iter` iterations.
pub(crate) fn minimize(
    mut f: impl FnMut(&[f64], &mut [f64]) -> f64,
    x: &mut [f64],
    max_iter: usize,
    gtol: f64,
) {
    let n = x.len();
    let mut g = vec![0.0; n];
    let mut fx = f(x, &mut g);
    let mut steps: VecDeque<(Vec<f64>, Vec<f64>, f64)> = VecDeque::with_capacity(MEMORY);
    let mut d = vec![0.0; n];
    let mut trial = vec![0.0; n];
    let mut g_trial = vec![0.0; n];
    let mut alpha = [0.0; MEMORY];
    for iter in 0..max_iter {
        if g.iter().fold(0.0f64, |m, v| m.max(v.abs())) <= gtol {
            return;
        }
        direction(&steps, &g, &mut d, &mut alpha);
        let mut slope = dot(&g, &d);
        if slope >= 0.0 {
            // Not a descent direction (numerical trouble): restart from steepest descent.
            steps.clear();
            for (dj, gj) in d.iter_mut().zip(&g) {
                *dj = -gj;
            }
            slope = dot(&g, &d);
        }
        let mut step = if iter == 0 && steps.is_empty() {
            1.0 / dot(&g, &g).sqrt().max(1.0)
        } else {
            1.0
        };
        let mut accepted = false;
        for _ in 0..60 {
            for ((t, xj), dj) in trial.iter_mut().zip(x.iter()).zip(&d) {
                *t = xj + step * dj;
            }
            let ft = f(&trial, &mut g_trial);
            if ft.is_finite() && ft <= fx + 1e-4 * step * slope {
                let s: Vec<f64> = trial.iter().zip(x.iter()).map(|(a, b)| a - b).collect();
                let y: Vec<f64> = g_trial.iter().zip(&g).map(|(a, b)| a - b).collect();
                let sy = dot(&s, &y);
                if sy > 1e-12 * dot(&y, &y).max(f64::MIN_POSITIVE) {
                    if steps.len() == MEMORY {
                        steps.pop_front();
                    }
                    steps.push_back((s, y, 1.0 / sy));
                }
                let decrease = fx - ft;
                x.copy_from_slice(&trial);
                g.copy_from_slice(&g_trial);
                fx = ft;
                accepted = true;
                if decrease <= f64::EPSILON * fx.abs().max(1.0) && steps.is_empty() {
                    return;
                }
                break;
            }
            step *= 0.5;
        }
        if !accepted {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimises_a_badly_scaled_quadratic_and_rosenbrock() {
        // f = 1e4 (x0 - 1)^2 + (x1 + 2)^2: condition number 1e4.
        let mut x = vec![0.0, 0.0];
        minimize(
            |x, g| {
                g[0] = 2e4 * (x[0] - 1.0);
                g[1] = 2.0 * (x[1] + 2.0);
                1e4 * (x[0] - 1.0).powi(2) + (x[1] + 2.0).powi(2)
            },
            &mut x,
            100,
            1e-10,
        );
        assert!(
            (x[0] - 1.0).abs() < 1e-9 && (x[1] + 2.0).abs() < 1e-9,
            "{x:?}"
        );
        let mut x = vec![-1.2, 1.0];
        minimize(
            |x, g| {
                let (a, b) = (x[0], x[1]);
                g[0] = -2.0 * (1.0 - a) - 400.0 * a * (b - a * a);
                g[1] = 200.0 * (b - a * a);
                (1.0 - a).powi(2) + 100.0 * (b - a * a).powi(2)
            },
            &mut x,
            500,
            1e-10,
        );
        assert!(
            (x[0] - 1.0).abs() < 1e-6 && (x[1] - 1.0).abs() < 1e-6,
            "{x:?}"
        );
    }
}
