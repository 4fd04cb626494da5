//! PostgresML's `test_sampling => 'stratified'` for classification: every class is split in the same proportion,
//! so the test rows keep the label distribution of the whole relation. Rows arrive shuffled (the relation is
//! read `ORDER BY random()`); this only chooses which of them are the test rows.

/// Reorders `x` and `y` so that the last `n_test` rows are a per-class proportional share (largest remainders
/// make the counts add up), keeping the shuffled order within each part.
pub(crate) fn stratify(x: &mut Vec<Vec<f64>>, y: &mut Vec<f64>, n_test: usize) {
    let n = y.len();
    if n_test == 0 || n_test >= n || x.len() != n {
        return;
    }
    let classes = super::logistic::classes_of(y);
    let members: Vec<Vec<usize>> = classes
        .iter()
        .map(|c| (0..n).filter(|&i| y[i] == *c).collect())
        .collect();
    let exact: Vec<f64> = members
        .iter()
        .map(|m| m.len() as f64 * n_test as f64 / n as f64)
        .collect();
    let mut take: Vec<usize> = exact.iter().map(|e| e.floor() as usize).collect();
    let mut order: Vec<usize> = (0..classes.len()).collect();
    order.sort_by(|a, b| {
        (exact[*b] - exact[*b].floor()).total_cmp(&(exact[*a] - exact[*a].floor()))
    });
    let mut short = n_test - take.iter().sum::<usize>();
    for c in order {
        if short == 0 {
            break;
        }
        if take[c] < members[c].len() {
            take[c] += 1;
            short -= 1;
        }
    }
    let mut test = vec![false; n];
    for (m, k) in members.iter().zip(&take) {
        for &i in &m[m.len() - k..] {
            test[i] = true;
        }
    }
    let (mut train_x, mut test_x) = (Vec::with_capacity(n - n_test), Vec::with_capacity(n_test));
    let (mut train_y, mut test_y) = (Vec::with_capacity(n - n_test), Vec::with_capacity(n_test));
    for (i, (row, label)) in x.drain(..).zip(y.drain(..)).enumerate() {
        if test[i] {
            test_x.push(row);
            test_y.push(label);
        } else {
            train_x.push(row);
            train_y.push(label);
        }
    }
    train_x.extend(test_x);
    train_y.extend(test_y);
    *x = train_x;
    *y = train_y;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_class_is_split_in_proportion() {
        // 60 of class 0 then 30 of class 1 then 10 of class 2, in that order: a plain 'last' split would test
        // only class 2.
        let mut y: Vec<f64> = (0..100)
            .map(|i| {
                if i < 60 {
                    0.0
                } else if i < 90 {
                    1.0
                } else {
                    2.0
                }
            })
            .collect();
        let mut x: Vec<Vec<f64>> = (0..100).map(|i| vec![i as f64]).collect();
        stratify(&mut x, &mut y, 25);
        let test = &y[75..];
        let count = |c: f64| test.iter().filter(|v| **v == c).count();
        assert_eq!((count(0.0), count(1.0), count(2.0)), (15, 8, 2));
        // Rows travel with their labels, and the order within each part is kept.
        assert!(x.iter().zip(&y).all(|(r, l)| *l
            == if r[0] < 60.0 {
                0.0
            } else if r[0] < 90.0 {
                1.0
            } else {
                2.0
            }));
        for part in [0..75, 75..100] {
            let xs: Vec<f64> = x[part].iter().map(|r| r[0]).collect();
            assert!(xs.windows(2).all(|w| w[0] < w[1]), "{xs:?}");
        }
        assert_eq!(y.len(), 100);
    }
}
