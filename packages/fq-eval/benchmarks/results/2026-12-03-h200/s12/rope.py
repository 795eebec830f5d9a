"""Where the prefill's RoPE time goes: output strides and times of its compiled forms; the key map after."""

import torch
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from fq_core.transforms.kronecker import apply_right

torch.manual_seed(0)
B, T, H, D = 1, 2048, 32, 128
dt = torch.float16
qkv = torch.randn(B, T, 3 * H * D, device="cuda", dtype=dt)
q, k, _ = qkv.split(H * D, -1)
q, k = q.view(B, T, H, D).transpose(1, 2), k.view(B, T, H, D).transpose(1, 2)
cos, sin = torch.randn(B, T, D, device="cuda", dtype=dt), torch.randn(B, T, D, device="cuda", dtype=dt)
pmap = torch.randn(D, D, device="cuda", dtype=dt)


def timed(fn, n=50):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    for _ in range(n):
        fn()
    e.record()
    torch.cuda.synchronize()
    return s.elapsed_time(e) / n * 1000


variants = {
    "eager": apply_rotary_pos_emb,
    "compiled dynamic": torch.compile(apply_rotary_pos_emb, dynamic=True),
    "compiled static": torch.compile(apply_rotary_pos_emb, dynamic=False),
}
for name, fn in variants.items():
    qo, ko = fn(q, k, cos, sin)
    t_rope = timed(lambda fn=fn: fn(q, k, cos, sin))
    x = qo.transpose(1, 2)
    view = x.reshape(-1, D).data_ptr() == x.data_ptr() and x.reshape(-1, D)._base is not None
    t_map = timed(
        lambda qo=qo, ko=ko: (apply_right(qo.transpose(1, 2), pmap), apply_right(ko.transpose(1, 2), pmap))
    )
    print(
        f"{name}: q out strides {qo.stride()} k {ko.stride()}; rope {t_rope:.1f} us; "
        f"two key maps {t_map:.1f} us; map input is a view: {view}"
    )
