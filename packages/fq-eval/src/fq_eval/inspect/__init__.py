"""`fq inspect`: why a layer quantises well or badly, in pictures and numbers.

For each online site of a decoder layer (attn_in, o_in, mlp_in, down_in) it takes real FP
activations X and the consumers' weights W, applies four transforms that leave X W^T unchanged (none,
per-channel scaling, Hadamard, the checkpoint's FlatQuant transform) and measures how flat the
per-channel magnitudes become and what 4-bit round-to-nearest then costs.

- `capture`: the FP activations and weights at each site;
- `learned`: a FlatQuant checkpoint's transforms, per-channel scales recovered from the merged layer;
- `transforms`: the four transforms compared at a site;
- `flatness`: the numbers (per-channel magnitude, flatness, relative RTN error);
- `analysis`: sites x transforms -> statistics, and the run over a checkpoint's layers;
- `plots`, `files`: the PNGs and JSON, written atomically;
- `cli`: the `fq inspect` command.

Nothing is imported here: the `fq` app imports `cli` on every call, which must stay light.
"""
