//! Maximum-weight perfect matching on a complete graph: Edmonds' blossom algorithm with dual
//! variables, in the O(n^3) primal-dual form described by Galil ("Efficient algorithms for
//! finding maximum matching in graphs", 1986).
//!
//! # Duals and slack
//!
//! Every vertex `v` carries a dual `u_v` and every non-trivial blossom `B` a dual `z_B >= 0`
//! (stored here as `z_B / 2`, so that one dual step moves every dual by the same `delta`).
//! The slack of an edge is `u_i + u_j - w_ij + sum(z_B : B contains i and j)`. The algorithm
//! keeps every slack non-negative (dual feasibility) and every matched edge at slack zero;
//! blossoms are always "full" (all but their base vertex matched inside). Together these prove
//! optimality of the final matching. The dual steps never stop at a vertex dual reaching zero
//! (the maximum-cardinality variant), so vertex duals are unrestricted in sign and the result
//! is a maximum-weight matching among those of maximum cardinality.
//!
//! Only edges between different top-level blossoms are ever inspected, and for those the
//! blossom duals cancel out, so their slack is simply `u_i + u_j - w_ij`.
//!
//! # Stages
//!
//! Each stage grows alternating trees from all unmatched (top-level) blossoms, which are labelled
//! S (outer); blossoms reached through a tight edge become T (inner) and their mates S. A tight
//! edge between two S blossoms either closes an odd cycle (a new blossom) or links two trees (an
//! augmenting path, which ends the stage). When no tight edge is left, the duals move by the
//! largest `delta` keeping feasibility, which makes a new edge tight or a T blossom's dual
//! zero (that blossom is then expanded). A stage does O(n^2) work and there are at most
//! `n / 2 + 1` stages; a greedy warm start on the initially tight edges saves many of them.
//!
//! Floating point: an edge counts as tight when its slack is at most `eps` (scaled by the
//! largest weight), and the edge or blossom that determined `delta` is always acted upon
//! directly, so rounding can cost at most an extra (tiny) dual step, never progress.

/// Marks "no vertex / no blossom".
const NONE: usize = usize::MAX;
/// Marks "no tree edge".
const NO_EDGE: (usize, usize) = (NONE, NONE);

/// An edge `(x, y)` remembered as a least-slack candidate, with its weight cached so that
/// comparing slacks needs no access to the (large) weight matrix.
#[derive(Clone, Copy, Debug)]
struct Edge {
    x: usize,
    y: usize,
    w: f64,
}

impl Edge {
    const NONE: Edge = Edge {
        x: NONE,
        y: NONE,
        w: 0.0,
    };

    fn is_none(self) -> bool {
        self.x == NONE
    }
}

/// Label of a top-level blossom within the current stage.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Label {
    /// Not (yet) in any alternating tree.
    Free,
    /// S: at even distance from a tree root.
    Outer,
    /// T: at odd distance from a tree root.
    Inner,
}

/// What the dual step with the smallest `delta` achieves.
#[derive(Clone, Copy, Debug)]
enum Event {
    /// The edge from S vertex `outer` to `vertex`, in a free blossom, becomes tight.
    Grow { outer: usize, vertex: usize },
    /// The edge between two S vertices in different top-level blossoms becomes tight.
    Link { x: usize, y: usize },
    /// The dual of this T blossom reaches zero.
    Expand(usize),
}

/// Maximum-weight matching of maximum cardinality on the complete graph over `n` vertices,
/// with edge weights `weight[i * n + j]` (symmetric, finite, non-negative; the diagonal is ignored).
/// Returns `mate` with `mate[v] = Some(u)` when v is matched to u. With `n` even every vertex is
/// matched (a perfect matching); with `n` odd exactly one vertex is left unmatched.
/// Among perfect (or near-perfect, n odd) matchings it maximises the total weight.
/// Runs in O(n^3) time and O(n^2) memory.
///
/// # Panics
/// When `weight.len() != n * n`.
#[track_caller]
pub fn max_weight_perfect_matching(n: usize, weight: &[f64]) -> Vec<Option<usize>> {
    assert_eq!(
        Some(weight.len()),
        n.checked_mul(n),
        "max_weight_perfect_matching: weight must hold n * n = {n}^2 entries"
    );
    let mut matcher = Matcher::new(n, weight);
    matcher.solve();
    matcher.mates()
}

/// The state of the blossom algorithm.
///
/// Ids `0..n` are vertices (trivial blossoms), ids `n..2n` non-trivial blossoms; at most
/// `n / 2` of the latter exist at a time, so `n` ids always suffice. Per-blossom arrays are
/// indexed by id and hold meaningful values for ids in use only.
struct Matcher<'a> {
    n: usize,
    weight: &'a [f64],
    /// Slack at or below this counts as zero.
    eps: f64,
    /// `mate[v]`: the vertex matched to `v`, or `NONE`.
    mate: Vec<usize>,
    /// Vertex duals `u_v` (ids `< n`) and blossom duals `z_B / 2` (ids `>= n`).
    dual: Vec<f64>,
    /// `top[v]`: the top-level blossom containing vertex `v` (`v` itself when trivial).
    top: Vec<usize>,
    /// The blossom immediately containing a vertex or blossom, or `NONE` at the top level.
    parent: Vec<usize>,
    /// The base vertex: the only vertex of the blossom not matched inside it.
    base: Vec<usize>,
    /// The sub-blossoms around the odd cycle, starting with the one holding the base.
    kids: Vec<Vec<usize>>,
    /// `links[b][i] = (x, y)`: the cycle edge with `x` in `kids[b][i]`, `y` in the next kid.
    /// With the base kid first, the links at odd positions are exactly the matched ones, and a
    /// matched link joins the bases of its two kids.
    links: Vec<Vec<(usize, usize)>>,
    /// Unused blossom ids.
    free_ids: Vec<usize>,
    /// Stage label of each top-level blossom.
    label: Vec<Label>,
    /// The tree edge `(from, to)` by which a labelled blossom was reached, `to` inside it:
    /// for T blossoms a tight edge from an S vertex, for S blossoms the matched edge into the
    /// base (`NO_EDGE` at a root).
    label_edge: Vec<(usize, usize)>,
    /// For a vertex not in an S blossom: the S vertex with the least-slack edge to it. Dual
    /// steps change all these slacks of one vertex alike, so the choice stays optimal.
    best_outer: Vec<usize>,
    /// `weight` of the edge `(best_outer[v], v)`.
    best_outer_w: Vec<f64>,
    /// For a top-level S blossom: a least-slack edge to another S blossom (`(inside, outside)`).
    best_link: Vec<Edge>,
    /// For an S blossom formed in this stage: for each other S blossom (as of formation) a
    /// least-slack edge to it. Blossoms without such a list (`has_list` false) are summarised
    /// by all edges of their vertices instead.
    links_out: Vec<Vec<Edge>>,
    has_list: Vec<bool>,
    /// S vertices still to be scanned.
    queue: Vec<usize>,
    /// Scratch for the tree walk in `common_ancestor`.
    mark: Vec<bool>,
    /// Scratch for `collect_links`: best edge per other blossom.
    best_by_blossom: Vec<Edge>,
}

impl<'a> Matcher<'a> {
    fn new(n: usize, weight: &'a [f64]) -> Self {
        // Initial duals u_v = (heaviest edge at v) / 2 make every slack non-negative and many
        // edges tight (see `greedy_start`). For odd n every vertex starts from the overall
        // heaviest edge instead: the vertex finally left single is then a tree root in every
        // stage, so it ends with the smallest dual of all, which is what proves the
        // near-perfect matching optimal (any other choice of single vertex x costs u_x - u_r).
        let mut dual = vec![0.0; 2 * n];
        let mut scale = 0.0_f64;
        for (v, row) in weight.chunks_exact(n.max(1)).enumerate() {
            let mut heaviest = f64::NEG_INFINITY;
            for (u, &w) in row.iter().enumerate() {
                if u != v {
                    heaviest = heaviest.max(w);
                    scale = scale.max(w.abs());
                }
            }
            if heaviest.is_finite() {
                dual[v] = heaviest / 2.0;
            }
        }
        if n % 2 == 1 {
            let top_dual = dual[..n].iter().copied().fold(0.0, f64::max);
            dual[..n].fill(top_dual);
        }
        Matcher {
            n,
            weight,
            eps: scale * 1e-12,
            mate: vec![NONE; n],
            dual,
            top: (0..n).collect(),
            parent: vec![NONE; 2 * n],
            base: (0..n).chain(std::iter::repeat_n(NONE, n)).collect(),
            kids: vec![Vec::new(); 2 * n],
            links: vec![Vec::new(); 2 * n],
            free_ids: (n..2 * n).rev().collect(),
            label: vec![Label::Free; 2 * n],
            label_edge: vec![NO_EDGE; 2 * n],
            best_outer: vec![NONE; n],
            best_outer_w: vec![0.0; n],
            best_link: vec![Edge::NONE; 2 * n],
            links_out: vec![Vec::new(); 2 * n],
            has_list: vec![false; 2 * n],
            queue: Vec::with_capacity(n),
            mark: vec![false; 2 * n],
            best_by_blossom: vec![Edge::NONE; 2 * n],
        }
    }

    /// Warm start: with the initial duals every tight edge is a heaviest edge at both of its
    /// ends. Matching tight edges greedily keeps every invariant (matched edges are tight and
    /// there are no blossoms yet) and typically saves a good share of the stages.
    fn greedy_start(&mut self) {
        for v in 0..self.n {
            if self.mate[v] != NONE {
                continue;
            }
            let row = &self.weight[v * self.n..(v + 1) * self.n];
            let tight = (v + 1..self.n).find(|&u| {
                self.mate[u] == NONE && self.dual[v] + self.dual[u] - row[u] <= self.eps
            });
            if let Some(u) = tight {
                self.mate[v] = u;
                self.mate[u] = v;
            }
        }
    }

    fn mates(&self) -> Vec<Option<usize>> {
        self.mate
            .iter()
            .map(|&m| (m != NONE).then_some(m))
            .collect()
    }

    /// Slack of a remembered edge between different top-level blossoms.
    #[inline]
    fn edge_slack(&self, e: Edge) -> f64 {
        self.dual[e.x] + self.dual[e.y] - e.w
    }

    /// Whether id `b` is a top-level blossom in use (trivial or not).
    fn is_top(&self, b: usize) -> bool {
        self.parent[b] == NONE && (b < self.n || !self.kids[b].is_empty())
    }

    /// Appends the vertices of blossom `b` to `out`.
    fn push_leaves(&self, b: usize, out: &mut Vec<usize>) {
        if b < self.n {
            out.push(b);
        } else {
            for &c in &self.kids[b] {
                self.push_leaves(c, out);
            }
        }
    }

    fn leaves(&self, b: usize) -> Vec<usize> {
        let mut out = Vec::new();
        self.push_leaves(b, &mut out);
        out
    }

    fn solve(&mut self) {
        self.greedy_start();
        while self.run_stage() {}
    }

    /// One stage: search for an augmenting path, adjusting duals as needed. Returns whether
    /// the matching grew; when it did not, the matching has maximum cardinality.
    fn run_stage(&mut self) -> bool {
        self.start_stage();
        let augmented = 'search: loop {
            while let Some(v) = self.queue.pop() {
                if self.scan(v) {
                    break 'search true;
                }
            }
            let Some((delta, event)) = self.next_event() else {
                break false;
            };
            self.shift_duals(delta);
            match event {
                Event::Grow { outer, vertex } => self.label_inner(vertex, outer),
                Event::Link { x, y } => {
                    if self.on_tight_link(x, y) {
                        break true;
                    }
                }
                Event::Expand(b) => {
                    self.dual[b] = 0.0;
                    self.expand(b, true);
                }
            }
        };
        self.finish_stage();
        augmented
    }

    /// Clears all labels and least-slack bookkeeping and makes every unmatched top-level
    /// blossom the S root of its own tree.
    fn start_stage(&mut self) {
        self.label.fill(Label::Free);
        self.best_outer.fill(NONE);
        self.best_link.fill(Edge::NONE);
        self.has_list.fill(false);
        self.links_out.iter_mut().for_each(Vec::clear);
        self.queue.clear();
        for b in 0..2 * self.n {
            if self.is_top(b) && self.mate[self.base[b]] == NONE {
                self.label_outer(b, NO_EDGE);
            }
        }
    }

    /// Expands the S blossoms whose dual is zero (they no longer constrain anything).
    fn finish_stage(&mut self) {
        for b in self.n..2 * self.n {
            if self.is_top(b) && self.label[b] == Label::Outer && self.dual[b] <= 0.0 {
                self.expand(b, false);
            }
        }
    }

    /// Labels top-level blossom `b` S, reached by `edge`, and queues its vertices for scanning.
    fn label_outer(&mut self, b: usize, edge: (usize, usize)) {
        self.label[b] = Label::Outer;
        self.label_edge[b] = edge;
        self.best_link[b] = Edge::NONE;
        self.has_list[b] = false;
        let mut queue = std::mem::take(&mut self.queue);
        self.push_leaves(b, &mut queue);
        self.queue = queue;
    }

    /// Labels the free blossom containing `vertex` T via the tight edge from S vertex `from`,
    /// and its mate's blossom S.
    fn label_inner(&mut self, vertex: usize, from: usize) {
        let b = self.top[vertex];
        self.label[b] = Label::Inner;
        self.label_edge[b] = (from, vertex);
        let base = self.base[b];
        let m = self.mate[base];
        debug_assert!(m != NONE, "a free blossom is always matched");
        if m != NONE {
            self.label_outer(self.top[m], (base, m));
        }
    }

    /// Scans S vertex `v`: labels free blossoms reached by tight edges, acts on tight edges to
    /// other S blossoms and records least-slack edges. Returns whether it augmented.
    fn scan(&mut self, v: usize) -> bool {
        let mut start = 0;
        while let Some(u) = self.scan_until_tight(v, start) {
            if self.label[self.top[u]] == Label::Outer {
                if self.on_tight_link(v, u) {
                    return true;
                }
            } else {
                self.label_inner(u, v);
            }
            start = u + 1;
        }
        false
    }

    /// Records the least-slack edges from S vertex `v` to the vertices `start..n` outside its
    /// blossom, up to the first tight edge to an S blossom or a free blossom, whose other end
    /// it returns. (The hot loop of the algorithm, hence the hoisted slices.)
    fn scan_until_tight(&mut self, v: usize, start: usize) -> Option<usize> {
        let n = self.n;
        let eps = self.eps;
        let bv = self.top[v];
        let row = &self.weight[v * n..(v + 1) * n];
        let top = &self.top[..n];
        let label = &self.label[..];
        let dual = &self.dual[..n];
        let best_outer = &mut self.best_outer[..n];
        let best_outer_w = &mut self.best_outer_w[..n];
        let dv = dual[v];
        let mut link = self.best_link[bv];
        let mut link_slack = if link.is_none() {
            f64::INFINITY
        } else {
            dual[link.x] + dual[link.y] - link.w
        };
        let mut hit = None;
        for u in start..n {
            let bu = top[u];
            if bu == bv {
                continue;
            }
            let w = row[u];
            let slack = dv + dual[u] - w;
            let lab = label[bu];
            if lab == Label::Outer {
                if slack <= eps {
                    hit = Some(u);
                    break;
                }
                if slack < link_slack {
                    link_slack = slack;
                    link = Edge { x: v, y: u, w };
                }
            } else {
                // Kept for T vertices too: they may become free when their blossom expands.
                let s = best_outer[u];
                if s == NONE || slack < dual[s] + dual[u] - best_outer_w[u] {
                    best_outer[u] = v;
                    best_outer_w[u] = w;
                }
                if lab == Label::Free && slack <= eps {
                    hit = Some(u);
                    break;
                }
            }
        }
        self.best_link[bv] = link;
        hit
    }

    /// The smallest dual step keeping feasibility, with the event it triggers, or `None` when
    /// nothing can change any more (no augmenting path exists).
    fn next_event(&self) -> Option<(f64, Event)> {
        let mut best: Option<(f64, Event)> = None;
        let mut offer = |delta: f64, event: Event| {
            if best.is_none_or(|(d, _)| delta < d) {
                best = Some((delta, event));
            }
        };
        // An S vertex to a vertex in a free blossom: the slack itself.
        for u in 0..self.n {
            let s = self.best_outer[u];
            if s != NONE && self.label[self.top[u]] == Label::Free {
                let slack = self.dual[s] + self.dual[u] - self.best_outer_w[u];
                offer(
                    slack,
                    Event::Grow {
                        outer: s,
                        vertex: u,
                    },
                );
            }
        }
        for b in (0..2 * self.n).filter(|&b| self.is_top(b)) {
            match self.label[b] {
                // Between S blossoms both ends move: half the slack.
                Label::Outer => {
                    let e = self.best_link[b];
                    if !e.is_none()
                        && self.top[e.y] != b
                        && self.label[self.top[e.y]] == Label::Outer
                    {
                        offer(self.edge_slack(e) / 2.0, Event::Link { x: e.x, y: e.y });
                    }
                }
                // A T blossom's dual must stay non-negative.
                Label::Inner if b >= self.n => offer(self.dual[b], Event::Expand(b)),
                _ => {}
            }
        }
        best.map(|(delta, event)| (delta.max(0.0), event))
    }

    /// Moves the duals by `delta`: S vertices down, T vertices up, top-level blossom duals the
    /// other way, so that edges inside blossoms and along tree edges keep their slack.
    fn shift_duals(&mut self, delta: f64) {
        for v in 0..self.n {
            match self.label[self.top[v]] {
                Label::Outer => self.dual[v] -= delta,
                Label::Inner => self.dual[v] += delta,
                Label::Free => {}
            }
        }
        for b in self.n..2 * self.n {
            if self.is_top(b) {
                match self.label[b] {
                    Label::Outer => self.dual[b] += delta,
                    Label::Inner => self.dual[b] -= delta,
                    Label::Free => {}
                }
            }
        }
    }

    /// Handles the tight edge between S vertices `x` and `y` of different top-level blossoms:
    /// forms a blossom when they share a tree, augments otherwise. Returns whether it augmented.
    fn on_tight_link(&mut self, x: usize, y: usize) -> bool {
        match self.common_ancestor(self.top[x], self.top[y]) {
            Some(root) => {
                self.form_blossom(root, x, y);
                false
            }
            None => {
                self.augment_to_root(x, y);
                self.augment_to_root(y, x);
                true
            }
        }
    }

    /// The S blossom two tree levels above S blossom `b`, or `NONE` at a root.
    fn outer_parent(&self, b: usize) -> usize {
        let from = self.label_edge[b].0;
        if from == NONE {
            return NONE;
        }
        let inner = self.top[from];
        self.top[self.label_edge[inner].0]
    }

    /// The nearest common S ancestor of S blossoms `a` and `b`, or `None` when they lie in
    /// different trees. Walks up both paths alternately, so the cost is linear in their length.
    fn common_ancestor(&mut self, a: usize, b: usize) -> Option<usize> {
        let mut visited = Vec::new();
        let (mut x, mut y) = (a, b);
        let mut found = None;
        while x != NONE || y != NONE {
            if x != NONE {
                if self.mark[x] {
                    found = Some(x);
                    break;
                }
                self.mark[x] = true;
                visited.push(x);
                x = self.outer_parent(x);
            }
            std::mem::swap(&mut x, &mut y);
        }
        for c in visited {
            self.mark[c] = false;
        }
        found
    }

    /// Shrinks the odd cycle closed by tight edge `(v, u)` through their common S ancestor
    /// `root` into a new S blossom. Its T sub-blossoms become S and get scanned.
    fn form_blossom(&mut self, root: usize, v: usize, u: usize) {
        let b = self
            .free_ids
            .pop()
            .expect("at most n/2 non-trivial blossoms exist at a time");
        let mut kids = std::mem::take(&mut self.kids[b]);
        let mut links = std::mem::take(&mut self.links[b]);
        kids.push(root);
        // Down from the root to v's blossom: each tree edge links a kid to the next.
        let mut path = Vec::new();
        let mut c = self.top[v];
        while c != root {
            path.push(c);
            c = self.top[self.label_edge[c].0];
        }
        for &c in path.iter().rev() {
            links.push(self.label_edge[c]);
            kids.push(c);
        }
        links.push((v, u));
        // Up from u's blossom back to the root: tree edges traversed backwards.
        let mut c = self.top[u];
        while c != root {
            let (from, to) = self.label_edge[c];
            kids.push(c);
            links.push((to, from));
            c = self.top[from];
        }

        self.base[b] = self.base[root];
        self.label[b] = Label::Outer;
        self.label_edge[b] = self.label_edge[root];
        self.dual[b] = 0.0;
        self.parent[b] = NONE;
        let mut leaves = Vec::new();
        for &c in &kids {
            self.parent[c] = b;
            leaves.clear();
            self.push_leaves(c, &mut leaves);
            for &x in &leaves {
                self.top[x] = b;
            }
            if self.label[c] == Label::Inner {
                self.queue.extend_from_slice(&leaves);
            }
        }
        self.kids[b] = kids;
        self.links[b] = links;
        self.collect_links(b);
    }

    /// Builds the least-slack edge list of the new S blossom `b` from its kids' lists (or all
    /// edges of kids without one), keeping one edge per other S blossom. O(n) per kid with a
    /// list, O(n) per vertex otherwise; each vertex is in a list-less kid once per stage.
    fn collect_links(&mut self, b: usize) {
        let mut touched = Vec::new();
        for i in 0..self.kids[b].len() {
            let c = self.kids[b][i];
            if self.has_list[c] {
                self.has_list[c] = false;
                let list = std::mem::take(&mut self.links_out[c]);
                for &e in &list {
                    self.offer_link(b, e, &mut touched);
                }
                self.links_out[c] = list;
                self.links_out[c].clear();
            } else {
                for x in self.leaves(c) {
                    let row = &self.weight[x * self.n..(x + 1) * self.n];
                    for (y, &w) in row.iter().enumerate() {
                        self.offer_link(b, Edge { x, y, w }, &mut touched);
                    }
                }
            }
        }
        let mut list = std::mem::take(&mut self.links_out[b]);
        list.clear();
        let mut best = Edge::NONE;
        let mut best_slack = f64::INFINITY;
        for t in touched {
            let e = std::mem::replace(&mut self.best_by_blossom[t], Edge::NONE);
            list.push(e);
            let s = self.edge_slack(e);
            if s < best_slack {
                best_slack = s;
                best = e;
            }
        }
        self.links_out[b] = list;
        self.has_list[b] = true;
        self.best_link[b] = best;
    }

    /// Candidate edge `e`, `e.x` in the new blossom `b`, for `collect_links`.
    #[inline]
    fn offer_link(&mut self, b: usize, e: Edge, touched: &mut Vec<usize>) {
        let t = self.top[e.y];
        if t == b || self.label[t] != Label::Outer {
            return;
        }
        let current = self.best_by_blossom[t];
        if current.is_none() {
            touched.push(t);
            self.best_by_blossom[t] = e;
        } else if self.edge_slack(e) < self.edge_slack(current) {
            self.best_by_blossom[t] = e;
        }
    }

    /// Augments along the tree path from S vertex `x` to its root, after which `x` is
    /// matched to `y` (the other end of the tight edge that closed the augmenting path).
    fn augment_to_root(&mut self, mut x: usize, mut y: usize) {
        loop {
            let bs = self.top[x];
            let inner_base = self.label_edge[bs].0;
            self.rebase(bs, x);
            self.mate[x] = y;
            if inner_base == NONE {
                return;
            }
            // The T blossom above: its base was matched to bs; now its entry vertex is
            // matched to the S vertex it was reached from.
            let bt = self.top[inner_base];
            let (from, entry) = self.label_edge[bt];
            self.rebase(bt, entry);
            self.mate[entry] = from;
            x = from;
            y = entry;
        }
    }

    /// Makes vertex `x` the base of blossom `b` by flipping the matching along the even-length
    /// side of the cycle from `x`'s kid to the base kid (recursively inside the kids), then
    /// rotating the cycle so that `x`'s kid comes first.
    fn rebase(&mut self, b: usize, x: usize) {
        if b < self.n {
            return;
        }
        let mut c = x;
        while self.parent[c] != b {
            c = self.parent[c];
        }
        self.rebase(c, x);
        let k = self.kids[b].len();
        let i = self.kids[b]
            .iter()
            .position(|&d| d == c)
            .expect("a kid of b contains x");
        // The side whose first link (at kid i) is matched has even length: forward for odd i.
        let mut j = i;
        if i % 2 == 1 {
            while j != 0 {
                // Link j (matched) gets unmatched, link j + 1 gets matched.
                let (p, q) = self.links[b][j + 1];
                self.rebase(self.kids[b][j + 1], p);
                self.rebase(self.kids[b][(j + 2) % k], q);
                self.mate[p] = q;
                self.mate[q] = p;
                j = (j + 2) % k;
            }
        } else {
            while j != 0 {
                // Link j - 1 (matched) gets unmatched, link j - 2 gets matched.
                let (p, q) = self.links[b][j - 2];
                self.rebase(self.kids[b][j - 2], p);
                self.rebase(self.kids[b][j - 1], q);
                self.mate[p] = q;
                self.mate[q] = p;
                j -= 2;
            }
        }
        self.kids[b].rotate_left(i);
        self.links[b].rotate_left(i);
        self.base[b] = x;
    }

    /// Dissolves top-level blossom `b` into its kids. Mid-stage (`b` a T blossom whose dual
    /// reached zero) the kids are relabelled so the tree stays alternating; at the end of a
    /// stage, kids whose dual is zero are expanded as well.
    fn expand(&mut self, b: usize, mid_stage: bool) {
        let mut kids = std::mem::take(&mut self.kids[b]);
        let mut links = std::mem::take(&mut self.links[b]);
        let mut leaves = Vec::new();
        for &c in &kids {
            self.parent[c] = NONE;
            leaves.clear();
            self.push_leaves(c, &mut leaves);
            for &x in &leaves {
                self.top[x] = c;
            }
        }
        if mid_stage {
            self.relabel_kids(b, &kids, &links);
        } else {
            for &c in &kids {
                if c >= self.n && self.dual[c] <= 0.0 {
                    self.expand(c, false);
                }
            }
        }
        kids.clear();
        links.clear();
        self.kids[b] = kids;
        self.links[b] = links;
        self.label[b] = Label::Free;
        self.label_edge[b] = NO_EDGE;
        self.best_link[b] = Edge::NONE;
        self.has_list[b] = false;
        self.links_out[b].clear();
        self.dual[b] = 0.0;
        self.base[b] = NONE;
        self.free_ids.push(b);
    }

    /// Relabels the kids of the expanded T blossom `b`: the even-length path from the kid
    /// entered by `b`'s tree edge to the base kid alternates T, S, ..., T; the other kids
    /// become free, or T at once when a tight edge from an S vertex reaches them.
    fn relabel_kids(&mut self, b: usize, kids: &[usize], links: &[(usize, usize)]) {
        let k = kids.len();
        for &c in kids {
            self.label[c] = Label::Free;
        }
        let mut edge = self.label_edge[b];
        let entry = self.top[edge.1];
        let mut p = kids
            .iter()
            .position(|&c| c == entry)
            .expect("the entry vertex lies in a kid");
        let forward = p % 2 == 1;
        while p != 0 {
            // T on kids[p]; its base is matched to the next kid, which becomes S.
            self.label_inner(edge.1, edge.0);
            let (q, r) = if forward {
                (p + 1, (p + 2) % k)
            } else {
                (p - 1, p - 2)
            };
            edge = if forward {
                links[q]
            } else {
                (links[r].1, links[r].0)
            };
            p = r;
        }
        // The base kid keeps b's external matched edge to the S blossom below b.
        self.label[kids[0]] = Label::Inner;
        self.label_edge[kids[0]] = edge;
        self.has_list[kids[0]] = false;
        for &c in kids {
            if self.label[c] != Label::Free {
                continue;
            }
            for x in self.leaves(c) {
                let s = self.best_outer[x];
                if s != NONE && self.dual[s] + self.dual[x] - self.best_outer_w[x] <= self.eps {
                    self.label_inner(x, s);
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SplitMix64: a tiny deterministic generator for test instances.
    struct SplitMix64(u64);

    impl SplitMix64 {
        fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        /// Uniform in [0, 1).
        fn next_f64(&mut self) -> f64 {
            (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
        }

        fn below(&mut self, m: u64) -> u64 {
            self.next_u64() % m
        }
    }

    #[derive(Clone, Copy, Debug)]
    enum Kind {
        Uniform,
        SmallIntegers,
        Integers,
        Zero,
        FewHuge,
    }

    const KINDS: [Kind; 5] = [
        Kind::Uniform,
        Kind::SmallIntegers,
        Kind::Integers,
        Kind::Zero,
        Kind::FewHuge,
    ];

    fn random_weights(n: usize, kind: Kind, rng: &mut SplitMix64) -> Vec<f64> {
        let mut w = vec![0.0; n * n];
        for i in 0..n {
            for j in i + 1..n {
                let x = match kind {
                    Kind::Uniform => rng.next_f64(),
                    Kind::SmallIntegers => rng.below(3) as f64,
                    Kind::Integers => rng.below(20) as f64,
                    Kind::Zero => 0.0,
                    Kind::FewHuge => {
                        if rng.below(8) == 0 {
                            1e9 * (1.0 + rng.next_f64())
                        } else {
                            rng.next_f64()
                        }
                    }
                };
                w[i * n + j] = x;
                w[j * n + i] = x;
            }
        }
        // The diagonal must be ignored.
        for i in 0..n {
            w[i * n + i] = 1e12;
        }
        w
    }

    /// Checks that `mate` is a matching of cardinality `n / 2` and returns its weight.
    fn check_valid(n: usize, w: &[f64], mate: &[Option<usize>]) -> f64 {
        assert_eq!(mate.len(), n);
        let mut total = 0.0;
        let mut matched = 0;
        for (v, &m) in mate.iter().enumerate() {
            if let Some(u) = m {
                assert_ne!(u, v, "vertex {v} matched to itself");
                assert!(u < n);
                assert_eq!(mate[u], Some(v), "mate is not symmetric at {v}");
                matched += 1;
                if v < u {
                    total += w[v * n + u];
                }
            }
        }
        assert_eq!(matched, 2 * (n / 2), "cardinality");
        total
    }

    /// Best perfect (n even) or near-perfect (n odd) matching weight by enumeration.
    fn brute_force(n: usize, w: &[f64]) -> f64 {
        fn go(n: usize, w: &[f64], used: u32, may_skip: bool) -> f64 {
            let Some(i) = (0..n).find(|&i| used & (1 << i) == 0) else {
                return 0.0;
            };
            let mut best = f64::NEG_INFINITY;
            if may_skip {
                best = go(n, w, used | (1 << i), false);
            }
            for j in i + 1..n {
                if used & (1 << j) == 0 {
                    let rest = go(n, w, used | (1 << i) | (1 << j), may_skip);
                    best = best.max(w[i * n + j] + rest);
                }
            }
            best
        }
        go(n, w, 0, n % 2 == 1)
    }

    /// Checks the optimality certificate: feasible duals, tight matched edges, non-negative
    /// blossom duals, full blossoms, and (n odd) the single vertex has the smallest dual.
    fn check_duals(m: &Matcher<'_>) {
        let n = m.n;
        let tol = 1e3 * m.eps;
        let ancestors = |v: usize| {
            let mut out = Vec::new();
            let mut c = m.parent[v];
            while c != NONE {
                out.push(c);
                c = m.parent[c];
            }
            out
        };
        for i in 0..n {
            let ai = ancestors(i);
            for j in i + 1..n {
                let aj = ancestors(j);
                let z: f64 = ai
                    .iter()
                    .filter(|b| aj.contains(b))
                    .map(|&b| 2.0 * m.dual[b])
                    .sum();
                let slack = m.dual[i] + m.dual[j] - m.weight[i * n + j] + z;
                assert!(slack >= -tol, "negative slack {slack} on ({i}, {j})");
                if m.mate[i] == j {
                    assert!(slack <= tol, "matched edge ({i}, {j}) has slack {slack}");
                }
            }
        }
        for b in n..2 * n {
            if !m.kids[b].is_empty() {
                assert!(m.dual[b] >= -tol, "negative blossom dual");
                let verts = m.leaves(b);
                let inside = verts
                    .iter()
                    .filter(|&&v| m.mate[v] != NONE && verts.contains(&m.mate[v]))
                    .count();
                assert_eq!(inside, verts.len() - 1, "blossom {b} is not full");
            }
        }
        if let Some(single) = (0..n).find(|&v| m.mate[v] == NONE) {
            let lowest = m.dual[..n].iter().copied().fold(f64::INFINITY, f64::min);
            assert!(
                m.dual[single] <= lowest + tol,
                "the single vertex's dual is not lowest"
            );
        }
    }

    fn solve_checked(n: usize, w: &[f64]) -> Vec<Option<usize>> {
        let mut m = Matcher::new(n, w);
        m.solve();
        check_duals(&m);
        m.mates()
    }

    #[test]
    fn matches_brute_force() {
        let mut rng = SplitMix64(0x5EED);
        for kind in KINDS {
            for n in 0..=10 {
                for _ in 0..200 {
                    let w = random_weights(n, kind, &mut rng);
                    let mate = solve_checked(n, &w);
                    let got = check_valid(n, &w, &mate);
                    let want = brute_force(n, &w);
                    let tol = 1e-9 * want.abs().max(1.0);
                    assert!(
                        (got - want).abs() <= tol,
                        "{kind:?} n={n}: got {got}, optimum {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn medium_instances_carry_a_certificate() {
        let mut rng = SplitMix64(0xC0FFEE);
        for kind in KINDS {
            for n in 11..=40 {
                for _ in 0..10 {
                    let w = random_weights(n, kind, &mut rng);
                    let mate = solve_checked(n, &w);
                    check_valid(n, &w, &mate);
                }
            }
        }
    }

    #[test]
    fn public_entry_point_agrees() {
        let mut rng = SplitMix64(7);
        for n in [4, 7, 10] {
            let w = random_weights(n, Kind::Uniform, &mut rng);
            let mate = max_weight_perfect_matching(n, &w);
            let got = check_valid(n, &w, &mate);
            assert!((got - brute_force(n, &w)).abs() <= 1e-9);
        }
    }

    #[test]
    fn tiny_sizes() {
        assert!(max_weight_perfect_matching(0, &[]).is_empty());
        assert_eq!(max_weight_perfect_matching(1, &[5.0]), vec![None]);
        assert_eq!(
            max_weight_perfect_matching(2, &[0.0, 3.0, 3.0, 0.0]),
            vec![Some(1), Some(0)]
        );
        assert_eq!(
            max_weight_perfect_matching(2, &[0.0; 4]),
            vec![Some(1), Some(0)]
        );
        // n = 3: the heaviest edge (1, 2) is taken, 0 stays single.
        let w = [0.0, 1.0, 2.0, 1.0, 0.0, 5.0, 2.0, 5.0, 0.0];
        assert_eq!(
            max_weight_perfect_matching(3, &w),
            vec![None, Some(2), Some(1)]
        );
    }

    #[test]
    fn prefers_cardinality_over_weight() {
        // A path-like heavy edge (1, 2) would leave 0 and 3 unmatched; perfect wins.
        let n = 4;
        let mut w = vec![0.0; 16];
        let mut set = |i: usize, j: usize, x: f64| {
            w[i * n + j] = x;
            w[j * n + i] = x;
        };
        set(1, 2, 10.0);
        set(0, 1, 1.0);
        set(2, 3, 1.0);
        let mate = max_weight_perfect_matching(n, &w);
        assert_eq!(check_valid(n, &w, &mate), 10.0);
    }

    #[test]
    #[should_panic(expected = "n * n")]
    fn wrong_length_panics() {
        max_weight_perfect_matching(3, &[0.0; 8]);
    }

    fn greedy_weight(n: usize, w: &[f64]) -> f64 {
        let mut edges: Vec<(usize, usize)> = (0..n)
            .flat_map(|i| (i + 1..n).map(move |j| (i, j)))
            .collect();
        edges.sort_by(|a, b| w[b.0 * n + b.1].total_cmp(&w[a.0 * n + a.1]));
        let mut used = vec![false; n];
        let mut total = 0.0;
        for (i, j) in edges {
            if !used[i] && !used[j] {
                used[i] = true;
                used[j] = true;
                total += w[i * n + j];
            }
        }
        total
    }

    #[test]
    fn larger_instances_beat_greedy() {
        let mut rng = SplitMix64(42);
        for (n, kind) in [
            (200, Kind::Uniform),
            (200, Kind::SmallIntegers),
            (201, Kind::Uniform),
            (150, Kind::FewHuge),
        ] {
            let w = random_weights(n, kind, &mut rng);
            let mate = solve_checked(n, &w);
            let got = check_valid(n, &w, &mate);
            let greedy = greedy_weight(n, &w);
            assert!(
                got >= greedy - 1e-9 * greedy.abs(),
                "{got} < greedy {greedy}"
            );
        }
    }
}
