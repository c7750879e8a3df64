//! Strongly connected components (Tarjan), written iteratively so that a deep module graph
//! cannot overflow the stack.

/// The strongly connected components of the graph with nodes `0..adjacency.len()` and edges
/// `v -> adjacency[v][i]`, each sorted, in the order Tarjan completes them.
pub fn strongly_connected(adjacency: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let n = adjacency.len();
    let mut index: Vec<Option<usize>> = vec![None; n];
    let mut low = vec![0; n];
    let mut on_stack = vec![false; n];
    let mut stack = Vec::new();
    let mut components = Vec::new();
    let mut next = 0;
    for start in 0..n {
        if index[start].is_some() {
            continue;
        }
        // Each frame: a node and how many of its edges have been explored.
        let mut frames = vec![(start, 0)];
        index[start] = Some(next);
        low[start] = next;
        next += 1;
        stack.push(start);
        on_stack[start] = true;
        while let Some(&(v, explored)) = frames.last() {
            if let Some(&w) = adjacency[v].get(explored) {
                if let Some(frame) = frames.last_mut() {
                    frame.1 += 1;
                }
                match index[w] {
                    None => {
                        index[w] = Some(next);
                        low[w] = next;
                        next += 1;
                        stack.push(w);
                        on_stack[w] = true;
                        frames.push((w, 0));
                    }
                    Some(w_index) if on_stack[w] => low[v] = low[v].min(w_index),
                    Some(_) => {}
                }
                continue;
            }
            frames.pop();
            if let Some(&(parent, _)) = frames.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if Some(low[v]) == index[v] {
                let mut component = Vec::new();
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    component.push(w);
                    if w == v {
                        break;
                    }
                }
                component.sort_unstable();
                components.push(component);
            }
        }
    }
    components
}

#[cfg(test)]
mod tests {
    use super::strongly_connected;

    fn nontrivial(adjacency: &[Vec<usize>]) -> Vec<Vec<usize>> {
        let mut found: Vec<_> = strongly_connected(adjacency)
            .into_iter()
            .filter(|c| c.len() > 1)
            .collect();
        found.sort();
        found
    }

    #[test]
    fn finds_cycles_and_ignores_chains() {
        assert!(nontrivial(&[vec![1], vec![2], vec![]]).is_empty());
        assert_eq!(nontrivial(&[vec![1], vec![0]]), [vec![0, 1]]);
        // 0 -> 1 -> 2 -> 0, 2 -> 3 -> 4 -> 3, 5 alone.
        let graph = [vec![1], vec![2], vec![0, 3], vec![4], vec![3], vec![]];
        assert_eq!(nontrivial(&graph), [vec![0, 1, 2], vec![3, 4]]);
    }

    #[test]
    fn every_node_is_in_exactly_one_component() {
        let graph = [vec![1, 2], vec![2], vec![0], vec![2]];
        let mut all: Vec<usize> = strongly_connected(&graph).concat();
        all.sort_unstable();
        assert_eq!(all, [0, 1, 2, 3]);
    }
}
