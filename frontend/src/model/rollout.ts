// Head fusion and attention rollout (Abnar & Zuidema 2020) over one example's layers. Pure maths.

/** How one layer's heads are fused into one matrix before the rollout. */
export type Fusion = 'mean' | 'max' | 'min';
export const FUSIONS: readonly Fusion[] = ['mean', 'max', 'min'];
export const MAX_DISCARD = 0.95; // the view keeps at least 5 % of each fused layer's weights

/** A fused layer's weights: n × n, row-major (query i, key j at i·n + j), in float64 as the
 * Python reference (tb_attention.vision.rollout) computes them, so that the two agree to ~1e-12. */
export type Matrix = Float64Array;

/** One head's weights, laid out as a Matrix (float32 rows read from the attention are fine). */
export type HeadWeights = ArrayLike<number>;

/** Fuses heads cell by cell: their mean, largest or smallest weight. */
export function fuseHeads(heads: readonly HeadWeights[], fusion: Fusion): Matrix {
  if (!heads.length) throw new Error('fuseHeads: no heads to fuse');
  const out = Float64Array.from(heads[0]);
  for (let h = 1; h < heads.length; h++) {
    const m = heads[h];
    if (m.length !== out.length) throw new Error(`fuseHeads: head ${h} has ${m.length} weights, head 0 has ${out.length}`);
    if (fusion === 'mean') for (let c = 0; c < out.length; c++) out[c] += m[c];
    else if (fusion === 'max') for (let c = 0; c < out.length; c++) out[c] = Math.max(out[c], m[c]);
    else for (let c = 0; c < out.length; c++) out[c] = Math.min(out[c], m[c]);
  }
  if (fusion === 'mean') for (let c = 0; c < out.length; c++) out[c] /= heads.length;
  return out;
}

/** Zeroes the `ratio` share of the smallest weights of a fused matrix (in place; ties by position,
 * earlier first), as vit-explain's rollout does: the rollout then follows the strong paths only. */
export function discardLowest(matrix: Matrix, ratio: number): Matrix {
  const count = Math.floor(matrix.length * Math.min(Math.max(ratio, 0), 1));
  if (count <= 0) return matrix;
  // The count-th smallest value (selection, linear time: a 1370-token ViT has 1.9·10⁶ weights per
  // layer); every weight below it goes, then as many equal to it as are still due, earliest first.
  const cut = kthSmallest(Float64Array.from(matrix), count - 1);
  let below = 0;
  for (let c = 0; c < matrix.length; c++) if (matrix[c] < cut) below++;
  let ties = count - below;
  for (let c = 0; c < matrix.length; c++) {
    if (matrix[c] < cut) matrix[c] = 0;
    else if (matrix[c] === cut && ties > 0) {
      matrix[c] = 0;
      ties--;
    }
  }
  return matrix;
}

/** The k-th smallest value (0-based) of `values`, which it reorders (Hoare's selection). */
export function kthSmallest(values: Float64Array, k: number): number {
  let lo = 0;
  let hi = values.length - 1;
  while (lo < hi) {
    const pivot = values[(lo + hi) >> 1];
    let i = lo;
    let j = hi;
    while (i <= j) {
      while (values[i] < pivot) i++;
      while (values[j] > pivot) j--;
      if (i <= j) {
        const t = values[i];
        values[i] = values[j];
        values[j] = t;
        i++;
        j--;
      }
    }
    if (k <= j) hi = j;
    else if (k >= i) lo = i;
    else return values[k];
  }
  return values[k];
}

/** The residual as the paper adds it: A = ½·W + ½·I, each row then renormalised to sum 1. */
export function addResidual(matrix: Matrix, n: number): Matrix {
  if (matrix.length !== n * n) throw new Error(`addResidual: ${matrix.length} weights is not ${n} × ${n}`);
  const out = new Float64Array(matrix.length);
  for (let i = 0; i < n; i++) {
    let sum = 0;
    for (let j = 0; j < n; j++) {
      const v = 0.5 * matrix[i * n + j] + (i === j ? 0.5 : 0);
      out[i * n + j] = v;
      sum += v;
    }
    for (let j = 0; j < n; j++) out[i * n + j] /= sum;
  }
  return out;
}

export interface RolloutOptions {
  fusion: Fusion;
  /** share of each fused layer's smallest weights set to 0 before the residual is added, 0..1 */
  discard: number;
}

/** One layer's rollout factor: its heads fused, the smallest weights discarded, the residual added. */
export function rolloutLayer(heads: readonly HeadWeights[], n: number, options: RolloutOptions): Matrix {
  return addResidual(discardLowest(fuseHeads(heads, options.fusion), options.discard), n);
}

/** Row `query` of the rollout Ã = A_last · … · A_first (the paper's Ã(l_i) = A(l_i) Ã(l_{i−1})):
 * how much each input token flows into `query`'s representation after the last layer given.
 * Computed as a row vector times each factor, last layer first: O(L·n²), never the n³ product. */
export function rolloutRow(factors: readonly Matrix[], n: number, query: number): Float64Array {
  if (query < 0 || query >= n) throw new Error(`rolloutRow: query ${query} is not a token of ${n}`);
  let row = new Float64Array(n);
  row[query] = 1;
  for (let l = factors.length - 1; l >= 0; l--) {
    const a = factors[l];
    const next = new Float64Array(n);
    for (let k = 0; k < n; k++) {
      const r = row[k];
      if (r === 0) continue;
      const base = k * n;
      for (let j = 0; j < n; j++) next[j] += r * a[base + j];
    }
    row = next;
  }
  return row;
}

/** The full rollout matrix (n³ per layer: tests and small inputs only). */
export function rolloutMatrix(factors: readonly Matrix[], n: number): Float64Array {
  const out = new Float64Array(n * n);
  for (let q = 0; q < n; q++) out.set(rolloutRow(factors, n, q), q * n);
  return out;
}
