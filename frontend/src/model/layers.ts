// What a layer is called: the model's own index when the writer stored layer names that give one
// (a notebook's `include_layers=[5, 6]` keeps layers 5 and 6, named "layer 5", "layer 6"; a probe's
// module names, "model.layers.5.self_attn"), else its position in the data.

/** One label per stored layer: the first number of each name when every name has one and they
 * increase (module paths name the block first: "encoder.block.3.layer.0.SelfAttention"), else 0..n-1. */
export function layerLabels(names: readonly string[] | null | undefined, n: number): string[] {
  const positions = Array.from({length: n}, (_, l) => String(l));
  if (!names || names.length !== n) return positions;
  const numbers = names.map((name) => /\d+/.exec(name)?.[0]);
  const increasing = numbers.every((m, l) => m !== undefined && (l === 0 || Number(m) > Number(numbers[l - 1])));
  return increasing ? numbers.map((m) => String(Number(m))) : positions;
}
