"""An independent from-the-spec forward pass on raw SAT keys (docs/SAMPLING.md#the-dit), as a test oracle.

Written straight from the description of the reference in docs/ (fused qkv split in
thirds, one adaLN Linear chunked 12 ways in the reference order, [text | video]
sequence), sharing no code with the pack's model or key mapping.
"""

import math

import torch
import torch.nn.functional as F

P = "model.diffusion_model."


def _lin(sd, name, x):
    return F.linear(x, sd[P + name + ".weight"], sd[P + name + ".bias"])


def _ln(sd, name, x, eps):
    return F.layer_norm(x, x.shape[-1:], sd[P + name + ".weight"], sd[P + name + ".bias"], eps)


def _rope(x, frames, height, width):
    d = x.shape[-1]
    dt, dh = d // 4, d // 8 * 3
    dw = d - dt - dh
    pos = torch.stack(torch.meshgrid(torch.arange(frames), torch.arange(height), torch.arange(width), indexing="ij"), -1).reshape(-1, 3).double()
    angles = []
    for axis, size in zip(range(3), (dt, dh, dw)):
        freqs = torch.tensor([1 / 10000 ** (2 * j / size) for j in range(size // 2)], dtype=torch.float64)
        angles.append((pos[:, axis : axis + 1] * freqs).repeat_interleave(2, dim=1))
    angle = torch.cat(angles, 1).float()
    x1, x2 = x[..., 0::2], x[..., 1::2]
    rot = torch.stack([-x2, x1], -1).flatten(-2)
    return x * angle.cos() + rot * angle.sin()


def sat_forward(sd, x, t, ctx, heads, layers, latent_frames=None, ref_step=None):
    """x: (B, T, C, H, W); returns (B, T, C, H, W)."""
    b, frames, c, h, w = x.shape
    d = sd[P + "mixins.patch_embed.proj.weight"].shape[0]

    def sinus(v):
        half = d // 2
        f = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
        a = v.float()[:, None] * f
        return torch.cat([a.cos(), a.sin()], -1)

    def embed(name, v):
        return _lin(sd, name + ".2", F.silu(_lin(sd, name + ".0", sinus(v))))

    e = embed("time_embed", t)
    if latent_frames is not None:
        e = e + embed("time_size_embedding", latent_frames) + embed("ref_step_time_embedding", ref_step)
    vid = F.conv2d(x.reshape(b * frames, c, h, w), sd[P + "mixins.patch_embed.proj.weight"], sd[P + "mixins.patch_embed.proj.bias"], stride=2)
    vid = vid.reshape(b, frames, d, h // 2, w // 2).permute(0, 1, 3, 4, 2).reshape(b, -1, d)
    txt = _lin(sd, "mixins.patch_embed.text_proj", ctx)
    n_txt = txt.shape[1]
    for i in range(layers):
        m = _lin(sd, f"mixins.adaln_layer.adaLN_modulations.{i}.1", F.silu(e)).chunk(12, dim=1)
        (sh_msa, sc_msa, g_msa, sh_mlp, sc_mlp, g_mlp, tsh_msa, tsc_msa, tg_msa, tsh_mlp, tsc_mlp, tg_mlp) = [v[:, None] for v in m]
        L = f"transformer.layers.{i}."
        vin = _ln(sd, L + "input_layernorm", vid, 1e-5) * (1 + sc_msa) + sh_msa
        tin = _ln(sd, L + "input_layernorm", txt, 1e-5) * (1 + tsc_msa) + tsh_msa
        seq = torch.cat([tin, vin], 1)
        q, k, v = _lin(sd, L + "attention.query_key_value", seq).chunk(3, dim=-1)
        q, k, v = [z.reshape(b, -1, heads, d // heads).transpose(1, 2) for z in (q, k, v)]
        q = _ln(sd, f"mixins.adaln_layer.query_layernorm_list.{i}", q, 1e-6)
        k = _ln(sd, f"mixins.adaln_layer.key_layernorm_list.{i}", k, 1e-6)
        q = torch.cat([q[:, :, :n_txt], _rope(q[:, :, n_txt:], frames, h // 2, w // 2)], 2)
        k = torch.cat([k[:, :, :n_txt], _rope(k[:, :, n_txt:], frames, h // 2, w // 2)], 2)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // heads), -1) @ v
        att = _lin(sd, L + "attention.dense", att.transpose(1, 2).reshape(b, -1, d))
        vid = vid + g_msa * att[:, n_txt:]
        txt = txt + tg_msa * att[:, :n_txt]
        vin = _ln(sd, L + "post_attention_layernorm", vid, 1e-5) * (1 + sc_mlp) + sh_mlp
        tin = _ln(sd, L + "post_attention_layernorm", txt, 1e-5) * (1 + tsc_mlp) + tsh_mlp
        mlp = _lin(sd, L + "mlp.dense_4h_to_h", F.gelu(_lin(sd, L + "mlp.dense_h_to_4h", torch.cat([tin, vin], 1)), approximate="tanh"))
        vid = vid + g_mlp * mlp[:, n_txt:]
        txt = txt + tg_mlp * mlp[:, :n_txt]
    allt = _ln(sd, "transformer.final_layernorm", torch.cat([txt, vid], 1), 1e-5)[:, n_txt:]
    shift, scale = _lin(sd, "mixins.final_layer.adaLN_modulation.1", F.silu(e)).chunk(2, dim=1)
    out = _ln(sd, "mixins.final_layer.norm_final", allt, 1e-6) * (1 + scale[:, None]) + shift[:, None]
    out = _lin(sd, "mixins.final_layer.linear", out)  # (B, t*h*w, c*p*q)
    out = out.reshape(b, frames, h // 2, w // 2, c, 2, 2).permute(0, 1, 4, 2, 5, 3, 6)
    return out.reshape(b, frames, c, h, w)
