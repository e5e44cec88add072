//! Exact vector search for namespaces of up to `store.exact_scan_max` vectors: each such
//! namespace's unit vectors are kept in RAM, in blocks, as floats and as int8, and a query is
//! scored against every one: by the int8 rows first, then the best of those by their floats.
//! Deterministic (no tree build depends on timing) and, at a few thousand vectors, faster than a
//! tree walk.
//!
//! The writer process keeps its copy current as it commits (`apply_add`, `apply_delete`); a
//! read-only process reloads a namespace when LMDB's sequence has moved since it loaded it.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use heed::RoTxn;
use roaring::RoaringBitmap;

use super::StoreError;
use super::codec;
use super::hidden::Hidden;
use super::lmdb::{self, Dbs};

/// Bytes of one block of [`RowBlocks`]: small enough that a namespace's last, partly filled block
/// wastes little, large enough that a scan walks long contiguous runs. Below glibc's default mmap
/// threshold, so blocks come from the heap, where a freed block is reused by the next (all have one
/// size) rather than left as a hole.
const BLOCK_BYTES: usize = 96 * 1024;

/// Rows of `dim` values (floats, or their int8 quantisation) kept in fixed-size blocks. Growing
/// adds a block and never copies or frees what is there: a doubling `Vec` would, as every
/// namespace grew, hold the old and new arrays at once and leave the old ones in malloc's free
/// lists (RSS stepping up by tens of MiB).
struct RowBlocks<T> {
    dim: usize,
    /// Rows per block (at least one).
    rows_per_block: usize,
    blocks: Vec<Box<[T]>>,
    len: usize,
}

impl<T: Copy + Default> RowBlocks<T> {
    fn new(dim: usize) -> Self {
        let dim = dim.max(1);
        Self {
            dim,
            rows_per_block: (BLOCK_BYTES / (dim * size_of::<T>())).max(1),
            blocks: Vec::new(),
            len: 0,
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.len
    }

    fn push(&mut self, v: &[T]) {
        let row = self.push_row();
        // A vector of another length (never from the store, which checks dimensions) is cut or
        // padded with zeros rather than shifting every later row.
        let n = v.len().min(row.len());
        row[..n].copy_from_slice(&v[..n]);
    }

    /// Appends a row of zeros and returns it to be filled in place.
    fn push_row(&mut self) -> &mut [T] {
        let (block, slot) = (
            self.len / self.rows_per_block,
            self.len % self.rows_per_block,
        );
        if block == self.blocks.len() {
            self.blocks
                .push(vec![T::default(); self.rows_per_block * self.dim].into_boxed_slice());
        }
        self.len += 1;
        let dim = self.dim;
        let row = &mut self.blocks[block][slot * dim..(slot + 1) * dim];
        // A slot a removal emptied still holds its old row.
        row.fill(T::default());
        row
    }

    fn row(&self, i: usize) -> &[T] {
        let (block, slot) = (i / self.rows_per_block, i % self.rows_per_block);
        &self.blocks[block][slot * self.dim..(slot + 1) * self.dim]
    }

    /// Moves the last row into row `i` and drops the last; frees the last block once empty.
    fn swap_remove(&mut self, i: usize) {
        let last = self.len - 1;
        if i != last {
            let moved = self.row(last).to_vec();
            let (block, slot) = (i / self.rows_per_block, i % self.rows_per_block);
            self.blocks[block][slot * self.dim..(slot + 1) * self.dim].copy_from_slice(&moved);
        }
        self.len = last;
        let needed = self.len.div_ceil(self.rows_per_block);
        self.blocks.truncate(needed);
    }

    /// Each block's filled rows beside the matching slice of `ids` (one per row, `len` of them):
    /// `(ids of the block's rows, an iterator over its rows)`.
    fn blocks_with<'a, I>(
        &'a self,
        ids: &'a [I],
    ) -> impl Iterator<Item = (&'a [I], std::slice::ChunksExact<'a, T>)> {
        let (dim, per) = (self.dim, self.rows_per_block);
        ids.chunks(per)
            .zip(&self.blocks)
            .map(move |(ids, block)| (ids, block[..ids.len() * dim].chunks_exact(dim)))
    }

    /// Bytes the blocks hold (filled or not).
    fn allocated_bytes(&self) -> usize {
        self.blocks.len() * self.rows_per_block * self.dim * size_of::<T>()
    }
}

/// One namespace's vectors, row `i` belonging to `chunks[i]`.
struct NsVectors {
    chunks: Vec<u32>,
    data: RowBlocks<f32>,
    /// The same rows quantised to int8, each scaled to its largest component (`scales` holds
    /// the factor back): a quarter of the bytes (15 MB of floats at 10k vectors), and VNNI
    /// scores 64 of them per instruction, so the full pass ranks these and the floats only
    /// rescore the best of them.
    quantised: RowBlocks<i8>,
    scales: Vec<f32>,
    row: HashMap<u32, usize>,
    /// LMDB sequence this copy reflects (read-only processes compare it).
    seq: u64,
    /// When it last served a search (a tick of [`ExactVectors`]): the least recent goes first
    /// when RAM runs short.
    used: AtomicU64,
}

impl NsVectors {
    fn new(dim: usize) -> Self {
        Self {
            chunks: Vec::new(),
            data: RowBlocks::new(dim),
            quantised: RowBlocks::new(dim),
            scales: Vec::new(),
            row: HashMap::new(),
            seq: 0,
            used: AtomicU64::new(0),
        }
    }

    fn push(&mut self, chunk: u32, v: &[f32]) {
        if self.row.contains_key(&chunk) {
            return;
        }
        self.row.insert(chunk, self.chunks.len());
        self.chunks.push(chunk);
        self.data.push(v);
        let scale = quantise_into(v, self.quantised.push_row());
        self.scales.push(scale);
    }

    fn remove(&mut self, chunk: u32) {
        let Some(i) = self.row.remove(&chunk) else {
            return;
        };
        let last = self.chunks.len() - 1;
        if i != last {
            let moved = self.chunks[last];
            self.chunks[i] = moved;
            self.row.insert(moved, i);
        }
        self.data.swap_remove(i);
        self.quantised.swap_remove(i);
        self.scales.swap_remove(i);
        self.chunks.pop();
    }

    /// Heap bytes this copy holds: the vector blocks (floats and int8), the chunk ids, the
    /// scales and the row map (its buckets: key, row and a control byte each).
    fn allocated_bytes(&self) -> usize {
        self.data.allocated_bytes()
            + self.quantised.allocated_bytes()
            + self.scales.capacity() * size_of::<f32>()
            + self.chunks.capacity() * size_of::<u32>()
            + self.row.capacity() * (size_of::<(u32, usize)>() + 1)
    }
}

/// The in-RAM vectors of small namespaces.
pub(crate) struct ExactVectors {
    dim: usize,
    /// Largest namespace (in vectors) searched exactly; larger ones use arroy's trees.
    max: usize,
    /// Whether this process is the writer (its copies are kept current by `apply_*`).
    writer: bool,
    /// Most vectors kept in RAM over all namespaces; the least recently searched namespaces are
    /// dropped (and loaded again when next searched) to stay under it.
    budget: usize,
    tick: AtomicU64,
    spaces: RwLock<HashMap<String, NsVectors>>,
}

/// What a loaded namespace counts against `store.exact_cache_vectors`: its vectors, and one for
/// the entry itself.
fn budget_share(v: &NsVectors) -> usize {
    v.chunks.len() + 1
}

/// `(chunk, cosine)` best first.
pub type Scored = Vec<(u32, f32)>;

impl ExactVectors {
    pub fn new(dim: usize, max: usize, budget: usize, writer: bool) -> Self {
        Self {
            dim,
            max,
            writer,
            budget,
            tick: AtomicU64::new(0),
            spaces: RwLock::new(HashMap::new()),
        }
    }

    fn touch(&self, v: &NsVectors) {
        v.used
            .store(self.tick.fetch_add(1, Ordering::Relaxed), Ordering::Relaxed);
    }

    /// Drops least recently searched namespaces until `incoming` more vectors fit the budget.
    /// Each namespace also counts as one vector: its entry (name, maps) costs less than one, and
    /// so namespaces searched while empty, one per new user, cannot pile up without bound.
    fn make_room(&self, spaces: &mut HashMap<String, NsVectors>, incoming: usize) {
        let mut total: usize = spaces.values().map(budget_share).sum();
        let incoming = incoming + 1;
        while total + incoming > self.budget {
            let Some(oldest) = spaces
                .iter()
                .min_by_key(|(_, v)| v.used.load(Ordering::Relaxed))
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(v) = spaces.remove(&oldest) {
                total -= budget_share(&v);
            }
        }
    }

    /// Vectors held in RAM now (over every loaded namespace): this cache's share of the
    /// process's memory is about `dim * 4` bytes each.
    pub fn cached_vectors(&self) -> u64 {
        self.read().values().map(|v| v.chunks.len() as u64).sum()
    }

    /// Heap bytes this cache holds now: every loaded namespace's vector blocks (filled or not),
    /// chunk ids and row maps. What the process's anonymous memory owes to the cache.
    pub fn cached_bytes(&self) -> u64 {
        self.read()
            .values()
            .map(|v| v.allocated_bytes() as u64)
            .sum()
    }

    /// Whether a namespace of `len` vectors is searched exactly.
    pub fn covers(&self, len: u64) -> bool {
        len <= self.max as u64
    }

    /// The `n` best chunks of namespace `ns` for unit `query`, restricted to `filter` when given,
    /// never one of `hidden`.
    /// Loads the namespace on first use (or, read-only, when LMDB moved on since).
    #[allow(clippy::too_many_arguments)]
    pub fn search(
        &self,
        env: &heed::Env<heed::WithoutTls>,
        dbs: &Dbs,
        rtxn: &RoTxn,
        ns: &str,
        index: u16,
        query: &[f32],
        filter: Option<&RoaringBitmap>,
        hidden: &Hidden,
        n: usize,
    ) -> Result<Scored, StoreError> {
        // Only a read-only copy needs LMDB's sequence: the writer's is kept current as it commits.
        let seq = if self.writer {
            0
        } else {
            lmdb::last_seq(dbs, rtxn)?
        };
        {
            let spaces = self.read();
            if let Some(v) = spaces.get(ns)
                && (self.writer || v.seq == seq)
            {
                self.touch(v);
                return Ok(self.scan(v, query, filter, hidden, n));
            }
        }
        let mut spaces = self.write();
        let stale = match spaces.get(ns) {
            None => true,
            Some(v) => !self.writer && v.seq != seq,
        };
        if stale {
            // The writer loads from a transaction opened under the lock, so a commit applied
            // before it is in the load and one applied after it finds the namespace loaded.
            let loaded = if self.writer {
                let fresh = env.read_txn()?;
                load(dbs, &fresh, ns, index, self.dim)?
            } else {
                let mut v = load(dbs, rtxn, ns, index, self.dim)?;
                v.seq = seq;
                v
            };
            spaces.remove(ns);
            self.make_room(&mut spaces, loaded.chunks.len());
            spaces.insert(ns.to_string(), loaded);
        }
        let v = spaces
            .get(ns)
            .ok_or_else(|| codec::corrupt("exact vectors"))?;
        self.touch(v);
        Ok(self.scan(v, query, filter, hidden, n))
    }

    /// The cosine of unit `query` with `chunk` of `ns` from the vectors in RAM: `None` when `ns`
    /// is not loaded (or, read-only, loaded before LMDB moved on), else the chunk's cosine, or
    /// `Some(None)` for a chunk with no live vector. A search's candidates found by words alone
    /// need it; reading their vectors from LMDB took about 1.5 µs each.
    pub fn cosine(
        &self,
        dbs: &Dbs,
        rtxn: &RoTxn,
        ns: &str,
        query: &[f32],
        chunk: u32,
    ) -> Result<Option<Option<f32>>, StoreError> {
        let seq = if self.writer {
            0
        } else {
            lmdb::last_seq(dbs, rtxn)?
        };
        let spaces = self.read();
        let Some(v) = spaces.get(ns).filter(|v| self.writer || v.seq == seq) else {
            return Ok(None);
        };
        Ok(Some(v.row.get(&chunk).map(|&i| dot(query, v.data.row(i)))))
    }

    /// Adds committed vectors, namespace by namespace (writer only; a namespace not loaded is
    /// left to load). One write lock for a whole committed batch: searches wait once, briefly,
    /// rather than once per memory of it.
    pub fn apply_adds<'a, V>(&self, adds: impl IntoIterator<Item = (&'a str, V)>)
    where
        V: IntoIterator<Item = (u32, &'a [f32])>,
    {
        let mut spaces = self.write();
        for (ns, vectors) in adds {
            let Some(v) = spaces.get_mut(ns) else {
                continue;
            };
            for (chunk, vector) in vectors {
                v.push(chunk, vector);
            }
            if v.chunks.len() > self.max {
                // Grew past exact search: its trees serve it from now on.
                spaces.remove(ns);
            }
        }
    }

    /// Drops committed deletions of `ns`.
    pub fn apply_delete(&self, ns: &str, chunks: &[u32]) {
        let mut spaces = self.write();
        if let Some(v) = spaces.get_mut(ns) {
            for &c in chunks {
                v.remove(c);
            }
        }
    }

    fn scan(
        &self,
        v: &NsVectors,
        query: &[f32],
        filter: Option<&RoaringBitmap>,
        hidden: &Hidden,
        n: usize,
    ) -> Scored {
        if filter.is_none() && v.chunks.len() > shortlist_len(n) {
            return self.scan_quantised(v, query, hidden, n);
        }
        let mut scored: Vec<(u32, f32)> = Vec::with_capacity(v.chunks.len());
        match filter {
            // Hidden chunks (a small share) are scored too and then not kept, without a branch:
            // skipping them costs a mispredicted branch each, which throws away the loads in
            // flight of a scan bound by memory (measured at 10k vectors: +0.14 ms per search
            // with 12% hidden, against +0 this way).
            None => {
                scored.resize(v.chunks.len(), (0, 0.0));
                let mut kept = 0;
                // Block by block: each block's rows are contiguous.
                for (chunks, rows) in v.data.blocks_with(&v.chunks) {
                    for (&chunk, row) in chunks.iter().zip(rows) {
                        scored[kept] = (chunk, dot(query, row));
                        kept += usize::from(!hidden.contains(chunk));
                    }
                }
                scored.truncate(kept);
            }
            // A filter may leave few rows: only those are scored.
            Some(f) => {
                for (chunks, rows) in v.data.blocks_with(&v.chunks) {
                    for (&chunk, row) in chunks.iter().zip(rows) {
                        if hidden.contains(chunk) || !f.contains(chunk) {
                            continue;
                        }
                        scored.push((chunk, dot(query, row)));
                    }
                }
            }
        }
        best(scored, n)
    }

    /// [`Self::scan`] of every row (no filter) in two passes: the int8 rows rank all of them,
    /// then the float rows rescore the [`shortlist_len`] best, so the result holds the exact
    /// cosines. Quantisation moves a unit 384-dim cosine by half a step per component: about
    /// 0.002 in practice (the errors' signs vary), 0.03 at worst. The result differs from the
    /// float scan's only if a row of the true top n ranks below the shortlist by its int8
    /// cosine, which takes hundreds of rows within that error of the n-th.
    fn scan_quantised(&self, v: &NsVectors, query: &[f32], hidden: &Hidden, n: usize) -> Scored {
        let q = I8Query::new(query);
        // (row, approximate cosine up to the query's own scale), hidden rows scored and then
        // not kept, without a branch (see `scan`).
        let mut approx: Vec<(u32, f32)> = vec![(0, 0.0); v.chunks.len()];
        let (mut kept, mut row) = (0, 0usize);
        for (chunks, rows) in v.quantised.blocks_with(&v.chunks) {
            for (&chunk, r) in chunks.iter().zip(rows) {
                approx[kept] = (row as u32, q.dot(r) as f32 * v.scales[row]);
                kept += usize::from(!hidden.contains(chunk));
                row += 1;
            }
        }
        approx.truncate(kept);
        let m = shortlist_len(n);
        if approx.len() > m {
            // Equal scores by chunk id, as in the exact order.
            let chunk = |r: u32| v.chunks[r as usize];
            approx.select_nth_unstable_by(m, |a, b| {
                b.1.total_cmp(&a.1).then(chunk(a.0).cmp(&chunk(b.0)))
            });
            approx.truncate(m);
        }
        let scored = approx
            .into_iter()
            .map(|(r, _)| {
                let r = r as usize;
                (v.chunks[r], dot(query, v.data.row(r)))
            })
            .collect();
        best(scored, n)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, NsVectors>> {
        self.spaces.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, NsVectors>> {
        self.spaces.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// Every live vector of `ns`: pending ones from their table, built ones from arroy.
fn load(
    dbs: &Dbs,
    rtxn: &RoTxn,
    ns: &str,
    index: u16,
    dim: usize,
) -> Result<NsVectors, StoreError> {
    let chunks = match dbs.ns_chunks.get(rtxn, &codec::ns_key(ns))? {
        Some(b) => codec::bitmap_from(b)?,
        None => RoaringBitmap::new(),
    };
    let mut out = NsVectors::new(dim);
    out.chunks.reserve_exact(chunks.len() as usize);
    for chunk in &chunks {
        if let Some(v) = super::vector::chunk_vector(dbs, rtxn, index, dim, chunk)? {
            out.push(chunk, &v);
        }
    }
    Ok(out)
}

/// The `n` best of `scored`, best first; equal scores by chunk id, so the order never depends on
/// row order.
fn best(mut scored: Scored, n: usize) -> Scored {
    let order = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if scored.len() > n {
        scored.select_nth_unstable_by(n, order);
        scored.truncate(n);
    }
    scored.sort_unstable_by(order);
    scored
}

/// How many rows the int8 pass keeps for the float rescoring when `n` are asked for.
fn shortlist_len(n: usize) -> usize {
    n.saturating_mul(4).max(n.saturating_add(64))
}

/// `v` as int8, scaled so its largest component is 127, and the factor that scales it back.
fn quantise(v: &[f32]) -> (Vec<i8>, f32) {
    let mut q = vec![0; v.len()];
    let scale = quantise_into(v, &mut q);
    (q, scale)
}

/// [`quantise`] into `out` (its first `v.len()` values; the rest untouched); returns the scale.
/// Every vector the store loads passes through here, so it must vectorise: `f32::round` is a
/// libm call per value on baseline x86-64 (it doubled the first search after a reopen).
fn quantise_into(v: &[f32], out: &mut [i8]) -> f32 {
    let max = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    if !(max > 0.0 && max.is_finite()) {
        out.iter_mut().take(v.len()).for_each(|y| *y = 0);
        return 0.0;
    }
    let to = 127.0 / max;
    for (y, x) in out.iter_mut().zip(v) {
        *y = round_to_i8(x * to);
    }
    max / 127.0
}

/// `x.round() as i8` (halves away from zero) without a libm call: adding the largest float
/// below one half, with `x`'s sign, and truncating is exact, as LLVM expands `round` itself
/// where SSE4.1 is there.
fn round_to_i8(x: f32) -> i8 {
    (x + 0.499_999_97_f32.copysign(x)) as i32 as i8
}

/// A query quantised for the int8 pass, and the kernel this CPU runs it with.
struct I8Query {
    q: Vec<i8>,
    /// The sum of `q`: the VNNI kernel's correction.
    sum: i32,
    vnni: bool,
}

impl I8Query {
    fn new(query: &[f32]) -> Self {
        Self::from_bytes(quantise(query).0)
    }

    fn from_bytes(q: Vec<i8>) -> Self {
        Self {
            sum: byte_sum(&q),
            q,
            vnni: has_vnni(),
        }
    }

    /// `dot_i8(q, row)`.
    fn dot(&self, row: &[i8]) -> i32 {
        #[cfg(target_arch = "x86_64")]
        if self.vnni {
            let sum = if row.len() >= self.q.len() {
                self.sum
            } else {
                byte_sum(&self.q[..row.len()])
            };
            // SAFETY: `vnni` is set only where the CPU has the kernel's features.
            return unsafe { dot_i8_vnni(&self.q, row, sum) };
        }
        dot_i8(&self.q, row)
    }
}

fn byte_sum(q: &[i8]) -> i32 {
    q.iter().map(|&x| i32::from(x)).sum()
}

/// Whether the CPU has AVX-512 VNNI (multiply-add of bytes into 32-bit sums): the int8 pass
/// then costs about a third of the AVX2 one, which widens bytes to 16 bits first.
fn has_vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// `dot_i8(q, row)` by VNNI, whose products are unsigned x signed bytes: the row's bytes are
/// flipped to `r + 128` (unsigned), and `128 * q_sum` (the sum of `q` over the row's length) is
/// taken back off. Lanes past the end load as zeros in both, so they add nothing.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn dot_i8_vnni(q: &[i8], row: &[i8], q_sum: i32) -> i32 {
    use std::arch::x86_64::{
        __mmask64, _mm512_dpbusd_epi32, _mm512_maskz_loadu_epi8, _mm512_reduce_add_epi32,
        _mm512_set1_epi8, _mm512_setzero_si512, _mm512_xor_si512,
    };
    let n = q.len().min(row.len());
    let flip = _mm512_set1_epi8(i8::MIN);
    let mut acc = _mm512_setzero_si512();
    let mut i = 0;
    while i < n {
        let left = n - i;
        let mask: __mmask64 = if left >= 64 { !0 } else { (1u64 << left) - 1 };
        // SAFETY: the mask covers only bytes below `n`, within both slices.
        let (r, a) = unsafe {
            (
                _mm512_maskz_loadu_epi8(mask, row.as_ptr().add(i)),
                _mm512_maskz_loadu_epi8(mask, q.as_ptr().add(i)),
            )
        };
        // A masked-out byte of `r` flips to 128 but meets a zero of `a`.
        acc = _mm512_dpbusd_epi32(acc, _mm512_xor_si512(r, flip), a);
        i += 64;
    }
    _mm512_reduce_add_epi32(acc) - 128 * q_sum
}

/// Integer dot product of int8 rows; with AVX2 where the CPU has it.
fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports the features this function is compiled for.
        return unsafe { dot_i8_avx2(a, b) };
    }
    dot_i8_plain(a, b)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dot_i8_avx2(a: &[i8], b: &[i8]) -> i32 {
    // The same code as `dot_i8_plain`, vectorised by the compiler for 256-bit registers.
    dot_i8_plain(a, b)
}

/// Integer sums are exact in any order, so the compiler vectorises this as it is.
#[inline(always)]
fn dot_i8_plain(a: &[i8], b: &[i8]) -> i32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| i32::from(*x) * i32::from(*y))
        .sum()
}

/// Dot product; with AVX2 and FMA where the CPU has them (the exact scan's whole cost).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports the features this function is compiled for.
        return unsafe { dot_avx2(a, b) };
    }
    dot_lanes(a, b)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    // The same code as `dot_lanes`, vectorised by the compiler for 256-bit registers.
    dot_lanes(a, b)
}

/// Dot product in eight independent lanes, so the compiler can vectorise it.
#[inline(always)]
fn dot_lanes(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    #[test]
    fn lane_dot_matches_the_plain_one() {
        let a: Vec<f32> = (0..19).map(|i| i as f32 * 0.25 - 2.0).collect();
        let b: Vec<f32> = (0..19).map(|i| 1.0 - i as f32 * 0.125).collect();
        let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - plain).abs() < 1e-4);
        assert!((dot_lanes(&a, &b) - plain).abs() < 1e-4);
    }

    #[test]
    fn removal_keeps_rows_and_chunks_paired() {
        let mut v = NsVectors::new(2);
        for c in 0..4u32 {
            v.push(c, &[c as f32, 1.0]);
        }
        v.remove(1);
        v.push(2, &[9.0, 9.0]); // already present: ignored
        let exact = ExactVectors::new(2, 10, 100, true);
        let none = Hidden::default();
        let got = exact.scan(&v, &[1.0, 0.0], None, &none, 10);
        assert_eq!(got, vec![(3, 3.0), (2, 2.0), (0, 0.0)]);
        let only: RoaringBitmap = [0u32, 2].into_iter().collect();
        assert_eq!(
            exact.scan(&v, &[1.0, 0.0], Some(&only), &none, 1),
            vec![(2, 2.0)]
        );
    }

    #[test]
    fn the_least_recently_searched_namespaces_leave_first() {
        // Each namespace counts one more than its vectors: a, b, c weigh 3, 3, 2.
        let exact = ExactVectors::new(1, 10, 8, true);
        let space = |n: u32| {
            let mut v = NsVectors::new(1);
            for c in 0..n {
                v.push(c, &[1.0]);
            }
            v
        };
        let mut spaces = HashMap::new();
        for (name, n) in [("a", 2), ("b", 2), ("c", 1)] {
            let v = space(n);
            exact.touch(&v);
            spaces.insert(name.to_string(), v);
        }
        exact.touch(&spaces["a"]); // "b" is now the least recently used
        exact.make_room(&mut spaces, 2);
        let mut left: Vec<_> = spaces.keys().cloned().collect();
        left.sort();
        assert_eq!(left, ["a", "c"]);
        // More than the whole budget: everything goes, the newcomer still loads.
        exact.make_room(&mut spaces, 9);
        assert!(spaces.is_empty());
    }

    #[test]
    fn empty_namespaces_cannot_pile_up() {
        // A new user's first search loads an empty namespace; a million users must not leave a
        // million entries behind.
        let exact = ExactVectors::new(1, 10, 50, true);
        let mut spaces = HashMap::new();
        for user in 0..1000 {
            exact.make_room(&mut spaces, 0);
            let v = NsVectors::new(1);
            exact.touch(&v);
            spaces.insert(format!("user{user}"), v);
        }
        assert!(spaces.len() <= 50, "{} entries kept", spaces.len());
        assert!(spaces.contains_key("user999"), "the newest stays");
    }

    /// A small deterministic pseudo-random vector (no rand dependency in the lib's tests).
    fn vector(seed: u32, dim: usize) -> Vec<f32> {
        let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..dim)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    /// The layout before blocks: one contiguous array, scanned row by row.
    fn flat_scan(rows: &[(u32, Vec<f32>)], query: &[f32], n: usize) -> Scored {
        let mut scored: Scored = rows.iter().map(|(c, v)| (*c, dot(query, v))).collect();
        scored.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        scored.truncate(n);
        scored
    }

    #[test]
    fn rows_cross_block_boundaries_intact() {
        let dim = 384;
        let mut blocks = RowBlocks::new(dim);
        let per = blocks.rows_per_block;
        assert!(per > 1 && per * dim * 4 <= BLOCK_BYTES);
        let n = per * 3 + 1;
        for i in 0..n {
            blocks.push(&vector(i as u32, dim));
        }
        assert_eq!(blocks.len(), n);
        assert_eq!(
            blocks.blocks.len(),
            4,
            "a fourth block for the one row past three"
        );
        for i in [0, per - 1, per, 2 * per + 5, n - 1] {
            assert_eq!(blocks.row(i), vector(i as u32, dim).as_slice(), "row {i}");
        }
        // Growing never moved a block: the first block's address is the one it started at.
        let first = blocks.blocks[0].as_ptr();
        for i in n..n + per {
            blocks.push(&vector(i as u32, dim));
        }
        assert_eq!(blocks.blocks[0].as_ptr(), first);
        assert_eq!(
            blocks.allocated_bytes(),
            blocks.blocks.len() * per * dim * 4
        );
    }

    #[test]
    fn removal_across_blocks_frees_the_emptied_block() {
        let dim = 384;
        let mut v = NsVectors::new(dim);
        let per = v.data.rows_per_block;
        for c in 0..=per as u32 {
            v.push(c, &vector(c, dim));
        }
        assert_eq!(v.data.blocks.len(), 2);
        // Row 0 (first block) takes the last row (second block's only one), which empties it.
        v.remove(0);
        assert_eq!(v.data.blocks.len(), 1, "the emptied block is freed");
        assert_eq!(v.chunks.len(), per);
        assert_eq!(v.row[&(per as u32)], 0);
        assert_eq!(v.data.row(0), vector(per as u32, dim).as_slice());
        for (c, &i) in &v.row {
            assert_eq!(v.chunks[i], *c);
            assert_eq!(v.data.row(i), vector(*c, dim).as_slice(), "chunk {c}");
        }
        // Removing everything frees every block.
        for c in 1..=per as u32 {
            v.remove(c);
        }
        assert_eq!(
            (v.chunks.len(), v.data.len(), v.data.blocks.len()),
            (0, 0, 0)
        );
    }

    #[test]
    fn block_scan_matches_the_flat_layout() {
        let dim = 384;
        let exact = ExactVectors::new(dim, 100_000, 1_000_000, true);
        let mut v = NsVectors::new(dim);
        let mut flat: Vec<(u32, Vec<f32>)> = Vec::new();
        let count = v.data.rows_per_block as u32 * 5 + 7;
        for c in 0..count {
            let vec = vector(c, dim);
            v.push(c, &vec);
            flat.push((c, vec));
        }
        // Some removals, mirrored in the flat copy (order does not matter to the result).
        for c in [3u32, 64, 65, count - 1, 200] {
            v.remove(c);
            flat.retain(|(x, _)| *x != c);
        }
        let none = Hidden::default();
        for q in 0..5 {
            let query = vector(10_000 + q, dim);
            for n in [1, 10, 100, count as usize] {
                assert_eq!(
                    exact.scan(&v, &query, None, &none, n),
                    flat_scan(&flat, &query, n),
                    "query {q}, top {n}"
                );
            }
        }
        let even: RoaringBitmap = (0..count).filter(|c| c % 2 == 0).collect();
        let query = vector(77_777, dim);
        let flat_even: Vec<_> = flat.iter().filter(|(c, _)| c % 2 == 0).cloned().collect();
        assert_eq!(
            exact.scan(&v, &query, Some(&even), &none, 20),
            flat_scan(&flat_even, &query, 20)
        );
    }

    fn unit(v: Vec<f32>) -> Vec<f32> {
        super::super::vector::normalized(&v).expect("a test vector has a direction")
    }

    #[test]
    fn the_int8_pass_then_the_float_rescoring_give_the_exact_scan() {
        let dim = 384;
        let exact = ExactVectors::new(dim, 100_000, 1_000_000, true);
        let mut v = NsVectors::new(dim);
        let mut flat: Vec<(u32, Vec<f32>)> = Vec::new();
        let count = 3_000u32;
        for c in 0..count {
            let vec = unit(vector(c, dim));
            v.push(c, &vec);
            flat.push((c, vec));
        }
        for c in (0..count).step_by(97) {
            v.remove(c);
            flat.retain(|(x, _)| *x != c);
        }
        // Every 13th chunk hidden: the int8 pass must leave them out as the float scan does.
        let hidden = Hidden::new((0..count).step_by(13).collect());
        let visible: Vec<_> = flat
            .iter()
            .filter(|(c, _)| !hidden.contains(*c))
            .cloned()
            .collect();
        for q in 0..20 {
            // Queries near a stored row (as a real query is near its answer) and random ones.
            let query = if q % 2 == 0 {
                let near = vector(q * 31, dim);
                let noise = vector(50_000 + q, dim);
                unit(near.iter().zip(&noise).map(|(a, b)| a + 0.5 * b).collect())
            } else {
                unit(vector(90_000 + q, dim))
            };
            for n in [1, 10, 50] {
                assert!(v.chunks.len() > shortlist_len(n), "the int8 pass runs");
                assert_eq!(
                    exact.scan(&v, &query, None, &hidden, n),
                    flat_scan(&visible, &query, n),
                    "query {q}, top {n}"
                );
            }
        }
    }

    #[test]
    fn rows_that_tie_keep_the_exact_scans_order_by_chunk_id() {
        let dim = 384;
        let exact = ExactVectors::new(dim, 100_000, 1_000_000, true);
        let mut v = NsVectors::new(dim);
        let mut flat: Vec<(u32, Vec<f32>)> = Vec::new();
        // Seven distinct vectors, each stored under about 70 chunks: the best one ties 70 ways.
        for c in 0..500u32 {
            let vec = unit(vector(c % 7, dim));
            v.push(c, &vec);
            flat.push((c, vec));
        }
        let none = Hidden::default();
        for q in 0..7 {
            let query = unit(vector(q, dim));
            for n in [1, 10, 69] {
                assert_eq!(
                    exact.scan(&v, &query, None, &none, n),
                    flat_scan(&flat, &query, n),
                    "query {q}, top {n}"
                );
            }
        }
    }

    #[test]
    fn quantisation_keeps_each_component_within_half_a_step() {
        let v = unit(vector(5, 384));
        let (q, scale) = quantise(&v);
        let max = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        assert!((scale * 127.0 - max).abs() < 1e-6);
        assert!(q.iter().any(|&x| x == 127 || x == -127));
        for (x, &y) in v.iter().zip(&q) {
            assert!((x - f32::from(y) * scale).abs() <= scale / 2.0 + 1e-6);
        }
        // A zero vector quantises to zeros with scale 0: it scores 0 against anything.
        assert_eq!(quantise(&[0.0; 4]), (vec![0i8; 4], 0.0));
        let (a, b) = (
            quantise(&unit(vector(1, 40))).0,
            quantise(&unit(vector(2, 40))).0,
        );
        let plain: i32 = a
            .iter()
            .zip(&b)
            .map(|(x, y)| i32::from(*x) * i32::from(*y))
            .sum();
        assert_eq!(dot_i8(&a, &b), plain);
    }

    #[test]
    fn the_int8_kernel_this_cpu_runs_gives_the_plain_dot_product() {
        let mut rng = StdRng::seed_from_u64(17);
        for dim in [1, 40, 63, 64, 65, 100, 384, 1000] {
            for _ in 0..20 {
                let bytes = |rng: &mut StdRng| -> Vec<i8> {
                    (0..dim).map(|_| rng.random_range(-127..=127)).collect()
                };
                let row = bytes(&mut rng);
                let query = I8Query::from_bytes(bytes(&mut rng));
                assert_eq!(query.dot(&row), dot_i8_plain(&query.q, &row), "dim {dim}");
                // A shorter row (never from the store) is scored over its own length.
                assert_eq!(
                    query.dot(&row[..dim / 2]),
                    dot_i8_plain(&query.q, &row[..dim / 2])
                );
            }
            let extreme = I8Query::from_bytes(vec![-127; dim]);
            assert_eq!(extreme.dot(&vec![-127; dim]), 127 * 127 * dim as i32);
            assert_eq!(extreme.dot(&vec![127; dim]), -127 * 127 * dim as i32);
        }
        eprintln!(
            "int8 kernel: {}",
            if has_vnni() {
                "AVX-512 VNNI"
            } else {
                "AVX2 or plain"
            }
        );
    }

    #[test]
    fn rounding_to_int8_matches_f32_round() {
        let below_half = 0.5f32.next_down();
        let mut xs = vec![
            0.0,
            -0.0,
            below_half,
            -below_half,
            0.5,
            -0.5,
            126.5,
            -126.5,
            127.0,
        ];
        xs.extend((-2540..=2540).map(|i| i as f32 * 0.05));
        xs.extend((-127..127).map(|k| k as f32 + 0.5));
        xs.extend((-127..127).flat_map(|k| {
            let tie = k as f32 + 0.5;
            [tie.next_down(), tie.next_up()]
        }));
        for x in xs {
            assert_eq!(round_to_i8(x), x.round() as i8, "{x}");
        }
    }

    #[test]
    fn a_slot_freed_by_a_removal_is_refilled_whole() {
        let mut blocks = RowBlocks::<i8>::new(4);
        blocks.push(&[1, 2, 3, 4]);
        blocks.push(&[5, 6, 7, 8]);
        blocks.swap_remove(1);
        blocks.push(&[9]);
        assert_eq!(blocks.row(1), &[9, 0, 0, 0]);
        let mut ns = NsVectors::new(4);
        ns.push(1, &[0.5, -0.25, 0.0, 0.125]);
        ns.push(2, &[-1.0, 0.0, 0.0, 0.0]);
        ns.remove(2);
        ns.push(3, &[0.0, 0.0, 1.0, 0.0]);
        assert_eq!(ns.quantised.row(1), &[0, 0, 127, 0]);
        assert_eq!(
            ns.quantised.row(1),
            quantise(&[0.0, 0.0, 1.0, 0.0]).0.as_slice()
        );
    }

    #[test]
    fn cached_bytes_count_whole_blocks() {
        let dim = 384;
        let exact = ExactVectors::new(dim, 100_000, 1_000_000, true);
        let mut v = NsVectors::new(dim);
        v.push(1, &vector(1, dim));
        exact.write().insert("a".into(), v);
        let bytes = exact.cached_bytes() as usize;
        assert!(
            bytes >= BLOCK_BYTES - dim * 4,
            "one vector holds a whole block: {bytes}"
        );
        assert_eq!(exact.cached_vectors(), 1);
    }
}
