//! Decision trees for the tree ensembles (`xgboost`-style gradient boosting and `random_forest`): growth level by
//! level with exact greedy splits over presorted columns, and prediction as a plain walk down `Vec`-stored nodes.
//!
//! One builder serves both ensembles. Each row carries a vector of sums `s` (K outputs) and a weight `h`; a node's
//! score is `Σ_k S_k² / (H + λ)` and its leaf value `S_k / (H + λ)`. With `s = -gradient`, `h = hessian` this is
//! XGBoost's second-order split gain and leaf weight; with `s = w·y`, `h = w`, `λ = 0` it is a regression tree's
//! variance reduction and mean, and with one-hot `y` it is a classification tree's Gini decrease and class
//! proportions.

use rand::seq::index::sample;
use rand::Rng;

/// `Node::feature` of a leaf.
const LEAF: u32 = u32::MAX;
/// `node_of` of a row outside the tree being grown (subsampled away) or in a finished leaf.
const NONE: u32 = u32::MAX;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Node {
    /// The feature tested, or [`LEAF`].
    feature: u32,
    /// Rows with `x[feature] < threshold` go left.
    threshold: f64,
    /// Children; for a leaf, `left` is the index of its values.
    left: u32,
    right: u32,
}

/// A fitted tree. Node 0 is the root.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Tree {
    nodes: Vec<Node>,
    /// `outputs` values per leaf.
    values: Vec<f64>,
    outputs: usize,
}

impl Tree {
    /// The values of the leaf `x` falls in. A missing feature (NaN, or beyond `x`) goes right.
    pub(crate) fn leaf(&self, x: &[f64]) -> &[f64] {
        let mut i = 0usize;
        loop {
            let Some(n) = self.nodes.get(i) else {
                return &[];
            };
            if n.feature == LEAF {
                let start = n.left as usize * self.outputs;
                return self.values.get(start..start + self.outputs).unwrap_or(&[]);
            }
            let v = x.get(n.feature as usize).copied().unwrap_or(f64::NAN);
            i = if v < n.threshold { n.left } else { n.right } as usize;
        }
    }

    /// The first output of `x`'s leaf (single-output trees).
    pub(crate) fn value(&self, x: &[f64]) -> f64 {
        self.leaf(x).first().copied().unwrap_or(0.0)
    }
}

/// The training rows with each feature's row order presorted once, shared by every tree of an ensemble.
pub(crate) struct Columns<'a> {
    x: &'a [Vec<f64>],
    sorted: Vec<Vec<u32>>,
}

impl<'a> Columns<'a> {
    pub(crate) fn new(x: &'a [Vec<f64>]) -> Columns<'a> {
        let features = x.first().map_or(0, Vec::len);
        let sorted = (0..features)
            .map(|f| {
                let mut rows: Vec<u32> = (0..x.len() as u32).collect();
                rows.sort_by(|a, b| x[*a as usize][f].total_cmp(&x[*b as usize][f]));
                rows
            })
            .collect();
        Columns { x, sorted }
    }

    pub(crate) fn features(&self) -> usize {
        self.sorted.len()
    }

    pub(crate) fn rows(&self) -> usize {
        self.x.len()
    }
}

/// How a tree grows.
#[derive(Debug, Clone)]
pub(crate) struct Growth {
    /// Depth limit (the root is depth 0); `usize::MAX` for none.
    pub(crate) max_depth: usize,
    /// L2 regularisation of leaf values (XGBoost's `reg_lambda`).
    pub(crate) lambda: f64,
    /// Least gain for a split (XGBoost's `gamma`), on the `½ (score_L + score_R - score)` scale.
    pub(crate) gamma: f64,
    /// Least weight `H` in each child (XGBoost's `min_child_weight`, a forest's `min_samples_leaf`).
    pub(crate) min_child_weight: f64,
    /// Least weight `H` in a node for it to be split (a forest's `min_samples_split`).
    pub(crate) min_split_weight: f64,
    /// Features tried at each node, drawn at random; 0 tries them all.
    pub(crate) features_per_node: usize,
    /// Leaf values are multiplied by this (XGBoost's learning rate).
    pub(crate) scale: f64,
}

/// A node still growing, and its best split found so far in the current pass.
struct Open {
    node: usize,
    sum_s: Vec<f64>,
    sum_h: f64,
    /// Features this node may split on (all when `None`).
    allowed: Option<Vec<bool>>,
    best: Option<Split>,
}

struct Split {
    gain: f64,
    feature: usize,
    threshold: f64,
    left_s: Vec<f64>,
    left_h: f64,
}

fn score(s: &[f64], h: f64, lambda: f64) -> f64 {
    let d = h + lambda;
    if d <= 0.0 {
        return 0.0;
    }
    s.iter().map(|v| v * v).sum::<f64>() / d
}

/// Grows one tree on the rows of `cols` with per-row sums `s` (`outputs` per row) and weights `h`; rows whose
/// `h` is 0 and `s` all 0 (left out by subsampling) take no part.
pub(crate) fn grow(
    cols: &Columns<'_>,
    s: &[f64],
    h: &[f64],
    outputs: usize,
    g: &Growth,
    rng: &mut impl Rng,
) -> Tree {
    let n = cols.rows();
    let features = cols.features();
    let mut tree = Tree {
        nodes: Vec::new(),
        values: Vec::new(),
        outputs,
    };
    let mut node_of = vec![NONE; n];
    let mut root_s = vec![0.0; outputs];
    let mut root_h = 0.0;
    for r in 0..n {
        let rs = &s[r * outputs..(r + 1) * outputs];
        if h[r] == 0.0 && rs.iter().all(|v| *v == 0.0) {
            continue;
        }
        node_of[r] = 0;
        root_h += h[r];
        for (a, b) in root_s.iter_mut().zip(rs) {
            *a += b;
        }
    }
    tree.nodes.push(Node {
        feature: LEAF,
        threshold: 0.0,
        left: 0,
        right: 0,
    });
    let mut open = vec![Open {
        node: 0,
        sum_s: root_s,
        sum_h: root_h,
        allowed: None,
        best: None,
    }];
    let mut depth = 0usize;
    while !open.is_empty() {
        let can_split = |o: &Open| depth < g.max_depth && o.sum_h >= g.min_split_weight;
        for o in open.iter_mut() {
            if g.features_per_node > 0 && g.features_per_node < features {
                let mut mask = vec![false; features];
                for f in sample(rng, features, g.features_per_node) {
                    mask[f] = true;
                }
                o.allowed = Some(mask);
            }
        }
        if open.iter().any(can_split) {
            find_splits(cols, s, h, outputs, g, &node_of, &mut open, depth);
        }
        let (next, child_of) = settle(&mut tree, &mut open, outputs, g);
        for (r, at) in node_of.iter_mut().enumerate() {
            if *at == NONE {
                continue;
            }
            let o = &open[*at as usize];
            *at = match &o.best {
                Some(split) => {
                    let (l, rt) = child_of[*at as usize];
                    if cols.x[r][split.feature] < split.threshold {
                        l
                    } else {
                        rt
                    }
                }
                None => NONE,
            };
        }
        open = next;
        depth += 1;
    }
    tree
}

/// Settles a level: each open node becomes a leaf, or a split with two new open nodes (returned, with each split
/// node's children's positions among them). A split node keeps its feature and threshold in `best` for moving
/// its rows down.
fn settle(
    tree: &mut Tree,
    open: &mut [Open],
    outputs: usize,
    g: &Growth,
) -> (Vec<Open>, Vec<(u32, u32)>) {
    let mut next: Vec<Open> = Vec::new();
    let mut child_of: Vec<(u32, u32)> = vec![(NONE, NONE); open.len()];
    for (i, o) in open.iter_mut().enumerate() {
        let Some(split) = o.best.take() else {
            let leaf = (tree.values.len() / outputs.max(1)) as u32;
            let d = o.sum_h + g.lambda;
            tree.values.extend(
                o.sum_s
                    .iter()
                    .map(|v| if d > 0.0 { g.scale * v / d } else { 0.0 }),
            );
            tree.nodes[o.node].left = leaf;
            continue;
        };
        let right_s: Vec<f64> = o
            .sum_s
            .iter()
            .zip(&split.left_s)
            .map(|(a, b)| a - b)
            .collect();
        let right_h = o.sum_h - split.left_h;
        let (l, r) = (tree.nodes.len(), tree.nodes.len() + 1);
        tree.nodes[o.node] = Node {
            feature: split.feature as u32,
            threshold: split.threshold,
            left: l as u32,
            right: r as u32,
        };
        let leaf = Node {
            feature: LEAF,
            threshold: 0.0,
            left: 0,
            right: 0,
        };
        tree.nodes.extend([leaf.clone(), leaf]);
        child_of[i] = (next.len() as u32, next.len() as u32 + 1);
        for (node, sum_s, sum_h) in [(l, split.left_s, split.left_h), (r, right_s, right_h)] {
            next.push(Open {
                node,
                sum_s,
                sum_h,
                allowed: None,
                best: None,
            });
        }
        o.best = Some(Split {
            left_s: Vec::new(),
            ..split
        });
    }
    (next, child_of)
}

/// One pass per feature over its presorted rows, keeping each open node's best split.
#[allow(clippy::too_many_arguments)]
fn find_splits(
    cols: &Columns<'_>,
    s: &[f64],
    h: &[f64],
    outputs: usize,
    g: &Growth,
    node_of: &[u32],
    open: &mut [Open],
    depth: usize,
) {
    let splittable: Vec<bool> = open
        .iter()
        .map(|o| depth < g.max_depth && o.sum_h >= g.min_split_weight)
        .collect();
    let parent_score: Vec<f64> = open
        .iter()
        .map(|o| score(&o.sum_s, o.sum_h, g.lambda))
        .collect();
    let mut run_s = vec![0.0; open.len() * outputs];
    let mut run_h = vec![0.0; open.len()];
    let mut last = vec![f64::NAN; open.len()];
    let mut seen = vec![false; open.len()];
    let mut right_s = vec![0.0; outputs];
    for f in 0..cols.features() {
        run_s.iter_mut().for_each(|v| *v = 0.0);
        run_h.iter_mut().for_each(|v| *v = 0.0);
        seen.iter_mut().for_each(|v| *v = false);
        for &r in &cols.sorted[f] {
            let r = r as usize;
            let at = node_of[r];
            if at == NONE {
                continue;
            }
            let o = at as usize;
            if !splittable[o] || open[o].allowed.as_ref().is_some_and(|m| !m[f]) {
                continue;
            }
            let v = cols.x[r][f];
            if seen[o] && v > last[o] {
                let left_h = run_h[o];
                let right_h = open[o].sum_h - left_h;
                if left_h >= g.min_child_weight && right_h >= g.min_child_weight {
                    let left_s = &run_s[o * outputs..(o + 1) * outputs];
                    for ((rs, total), l) in right_s.iter_mut().zip(&open[o].sum_s).zip(left_s) {
                        *rs = total - l;
                    }
                    let gain = 0.5
                        * (score(left_s, left_h, g.lambda) + score(&right_s, right_h, g.lambda)
                            - parent_score[o]);
                    let better = open[o].best.as_ref().is_none_or(|b| gain > b.gain);
                    // A split must gain something beyond rounding noise, and more than gamma.
                    let floor = g.gamma.max(1e-12 * parent_score[o].abs().max(1e-300));
                    if better && gain > floor {
                        let mid = last[o] + (v - last[o]) / 2.0;
                        open[o].best = Some(Split {
                            gain,
                            feature: f,
                            threshold: if mid > last[o] { mid } else { v },
                            left_s: left_s.to_vec(),
                            left_h,
                        });
                    }
                }
            }
            seen[o] = true;
            last[o] = v;
            run_h[o] += h[r];
            for (a, b) in run_s[o * outputs..(o + 1) * outputs]
                .iter_mut()
                .zip(&s[r * outputs..(r + 1) * outputs])
            {
                *a += b;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn plain() -> Growth {
        Growth {
            max_depth: usize::MAX,
            lambda: 0.0,
            gamma: 0.0,
            min_child_weight: 1.0,
            min_split_weight: 2.0,
            features_per_node: 0,
            scale: 1.0,
        }
    }

    #[test]
    fn a_full_tree_fits_a_step_function_exactly() {
        let x: Vec<Vec<f64>> = (0..40).map(|i| vec![i as f64, (i % 3) as f64]).collect();
        let y: Vec<f64> = x
            .iter()
            .map(|r| if r[0] < 17.0 { 5.0 } else { -1.0 })
            .collect();
        let cols = Columns::new(&x);
        let h = vec![1.0; x.len()];
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let t = grow(&cols, &y, &h, 1, &plain(), &mut rng);
        for (r, want) in x.iter().zip(&y) {
            assert_eq!(t.value(r), *want);
        }
        // One split is enough: the root tests feature 0 between 16 and 17.
        assert_eq!(t.nodes[0].feature, 0);
        assert_eq!(t.nodes[0].threshold, 16.5);
        assert_eq!(t.nodes.len(), 3);
    }

    #[test]
    fn depth_lambda_and_min_child_weight_limit_growth() {
        let x: Vec<Vec<f64>> = (0..64).map(|i| vec![i as f64]).collect();
        let y: Vec<f64> = (0..64).map(|i| (i * i) as f64).collect();
        let cols = Columns::new(&x);
        let h = vec![1.0; x.len()];
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let g = Growth {
            max_depth: 2,
            ..plain()
        };
        let t = grow(&cols, &y, &h, 1, &g, &mut rng);
        assert_eq!(t.values.len(), 4);
        // Leaf values are shrunk by lambda: S / (H + λ).
        let g = Growth {
            max_depth: 0,
            lambda: 64.0,
            ..plain()
        };
        let t = grow(&cols, &y, &h, 1, &g, &mut rng);
        let sum: f64 = y.iter().sum();
        assert_eq!(t.value(&[0.0]), sum / 128.0);
        let g = Growth {
            min_child_weight: 20.0,
            ..plain()
        };
        let t = grow(&cols, &y, &h, 1, &g, &mut rng);
        assert!(t.values.len() <= 3, "{}", t.values.len());
    }

    #[test]
    fn rows_left_out_take_no_part_and_missing_features_go_right() {
        let x: Vec<Vec<f64>> = (0..10).map(|i| vec![i as f64]).collect();
        let mut y: Vec<f64> = vec![1.0; 10];
        let mut h = vec![1.0; 10];
        // The rows from 5 on are left out: the tree is a single leaf of 1.
        for r in 5..10 {
            y[r] = 0.0;
            h[r] = 0.0;
        }
        let cols = Columns::new(&x);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let t = grow(&cols, &y, &h, 1, &plain(), &mut rng);
        assert_eq!(t.nodes.len(), 1);
        assert_eq!(t.value(&[9.0]), 1.0);
        let y: Vec<f64> = (0..10).map(|i| if i < 5 { 0.0 } else { 1.0 }).collect();
        let t = grow(&cols, &y, &[1.0; 10], 1, &plain(), &mut rng);
        assert_eq!(t.value(&[f64::NAN]), 1.0);
        assert_eq!(t.value(&[]), 1.0);
    }

    #[test]
    fn one_hot_outputs_give_class_proportions() {
        let x: Vec<Vec<f64>> = vec![vec![0.0], vec![0.0], vec![1.0], vec![1.0]];
        // Rows 0,1 are class 0 and 1; rows 2,3 both class 1: leaves [0.5, 0.5] and [0, 1].
        let s = [1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0];
        let cols = Columns::new(&x);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let t = grow(&cols, &s, &[1.0; 4], 2, &plain(), &mut rng);
        assert_eq!(t.leaf(&[0.0]), &[0.5, 0.5]);
        assert_eq!(t.leaf(&[1.0]), &[0.0, 1.0]);
    }
}
