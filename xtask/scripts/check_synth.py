#!/usr/bin/env python3
"""Independent check of `cargo xtask synth-model` output: every tensor name, dtype and shape
against config.json, the index, generation_config.json, and the magnitude of one dequantized
linear. Needs only `pip install safetensors numpy` (no torch). Also accepts the committed
fixtures (testdata/fixtures/*), which is how its expectations were checked.

Usage: check_synth.py MODEL_DIR [MODEL_DIR ...]
"""
import json, struct, sys, os
import numpy as np
from safetensors import safe_open

AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]

def raw_tensors(path):
    import mmap
    f = open(path, 'rb')
    raw = memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
    n = struct.unpack('<Q', raw[:8])[0]
    assert n % 8 == 0
    h = json.loads(bytes(raw[8:8 + n]))
    data = raw[8 + n:]
    return {k: (v['dtype'], v['shape'], data[v['data_offsets'][0]:v['data_offsets'][1]]) for k, v in h.items() if k != '__metadata__'}

def to_f32(dtype, b):
    if dtype == 'BF16': return (np.frombuffer(b, np.uint16).astype(np.uint32) << 16).view(np.float32)
    if dtype == 'F16': return np.frombuffer(b, np.float16).astype(np.float32)
    if dtype == 'F32': return np.frombuffer(b, np.float32)
    raise ValueError(dtype)

def fp8_table(fmt):
    m, bias = (3, 7) if fmt == 'F8_E4M3' else (2, 15)
    t = np.zeros(256, np.float32)
    for c in range(256):
        s = -1.0 if c & 0x80 else 1.0
        e = (c & 0x7F) >> m; f = c & ((1 << m) - 1)
        if fmt == 'F8_E4M3' and (c & 0x7F) == 0x7F: t[c] = np.nan; continue
        if fmt == 'F8_E5M2' and e == 31: t[c] = np.nan; continue
        t[c] = s * (f / 2**m * 2.0**(1 - bias) if e == 0 else (1 + f / 2**m) * 2.0**(e - bias))
    return t

def check(d):
    cfg = json.load(open(os.path.join(d, 'config.json')))
    fixture = not os.path.exists(os.path.join(d, 'generation_config.json'))
    gen = {} if fixture else json.load(open(os.path.join(d, 'generation_config.json')))
    assert fixture or gen == {"bos_token_id": 151643, "do_sample": True, "eos_token_id": [151645, 151643], "pad_token_id": 151643,
                   "temperature": 0.6, "top_k": 20, "top_p": 0.95, "transformers_version": "4.51.0"}
    for f in ['tokenizer.json', 'tokenizer_config.json']:
        assert fixture or os.path.getsize(os.path.join(d, f)) > 1000
    H, I, L = cfg['hidden_size'], cfg['intermediate_size'], cfg['num_hidden_layers']
    nh, nkv, hd, V = cfg['num_attention_heads'], cfg['num_key_value_heads'], cfg['head_dim'], cfg['vocab_size']
    qc = cfg.get('quantization_config')
    idx = os.path.join(d, 'model.safetensors.index.json')
    if os.path.exists(idx):
        index = json.load(open(idx)); files = sorted(set(index['weight_map'].values()))
    else:
        index = None; files = ['model.safetensors']
    meta = {}; raw = {}
    for f in files:
        with safe_open(os.path.join(d, f), framework='numpy') as sf:
            assert sf.metadata() == {'format': 'pt'}
            for k in sf.keys():
                sl = sf.get_slice(k)
                meta[k] = (sl.get_dtype(), list(sl.get_shape()))
                if index: assert index['weight_map'][k] == f
        raw.update(raw_tensors(os.path.join(d, f)))
    if index:
        assert set(index['weight_map']) == set(meta)
        sizes = {'BF16': 2, 'F16': 2, 'F32': 4, 'I32': 4, 'F8_E4M3': 1, 'F8_E5M2': 1}
        assert index['metadata']['total_size'] == sum(sizes[t] * int(np.prod(s)) for t, s in meta.values())
    method = qc['quant_method'] if qc else None
    dense = 'F16' if cfg['torch_dtype'] == 'float16' and not qc else 'BF16'
    exp = {'model.embed_tokens.weight': (dense, [V, H]), 'model.norm.weight': (dense, [H])}
    lin = {}
    for i in range(L):
        p = f'model.layers.{i}'
        exp[f'{p}.input_layernorm.weight'] = (dense, [H]); exp[f'{p}.post_attention_layernorm.weight'] = (dense, [H])
        exp[f'{p}.self_attn.q_norm.weight'] = (dense, [hd]); exp[f'{p}.self_attn.k_norm.weight'] = (dense, [hd])
        for n, o, ii in [('self_attn.q_proj', nh*hd, H), ('self_attn.k_proj', nkv*hd, H), ('self_attn.v_proj', nkv*hd, H),
                         ('self_attn.o_proj', H, nh*hd), ('mlp.gate_proj', I, H), ('mlp.up_proj', I, H), ('mlp.down_proj', H, I)]:
            lin[f'{p}.{n}'] = (o, ii)
    for p, (o, i) in lin.items():
        if qc is None:
            exp[p + '.weight'] = (dense, [o, i])
        elif method == 'awq':
            g = qc['group_size']
            exp[p + '.qweight'] = ('I32', [i, o // 8]); exp[p + '.qzeros'] = ('I32', [i // g, o // 8]); exp[p + '.scales'] = ('F16', [i // g, o])
        elif method == 'fp8':
            b = qc['weight_block_size']
            exp[p + '.weight'] = ('F8_E4M3', [o, i]); exp[p + '.weight_scale_inv'] = ('BF16', [-(-o // b[0]), -(-i // b[1])])
        else:
            strat = qc['config_groups']['group_0']['weights']['strategy']
            wdt = raw[p + '.weight'][0]
            assert wdt in ('F8_E4M3', 'F8_E5M2')
            sdt = 'F32' if wdt == 'F8_E5M2' else 'BF16'
            exp[p + '.weight'] = (wdt, [o, i]); exp[p + '.weight_scale'] = (sdt, [o, 1] if strat == 'channel' else [1])
    assert meta == exp, (set(meta) ^ set(exp), [(k, meta.get(k), exp[k]) for k in exp if meta.get(k) != exp[k]][:5])
    # Dequantize one linear and check magnitude.
    p = 'model.layers.0.mlp.down_proj'; o, i = lin[p]
    if qc is None:
        w = to_f32(*raw[p + '.weight'][::2])
    elif method == 'awq':
        g = qc['group_size']
        def unpack(b, rows):
            x = np.frombuffer(b, np.uint32).reshape(rows, -1)
            out = np.zeros((rows, x.shape[1] * 8), np.int32)
            for n_, col in enumerate(AWQ_ORDER):
                out[:, col::8] = (x >> (4 * n_)) & 15
            return out
        q = unpack(raw[p + '.qweight'][2], i); z = unpack(raw[p + '.qzeros'][2], i // g)
        s = to_f32('F16', raw[p + '.scales'][2]).reshape(i // g, o)
        w = ((q - np.repeat(z, g, 0)) * np.repeat(s, g, 0)).T
        assert fixture or 6 <= z.min() and z.max() <= 9
    else:
        wdt, _, wb = raw[p + '.weight']
        codes = np.frombuffer(wb, np.uint8).reshape(o, i)
        vals = fp8_table(wdt)[codes]
        assert not np.isnan(vals).any() and not np.isinf(vals).any()
        sname = '.weight_scale_inv' if method == 'fp8' else '.weight_scale'
        sdt, sshape, sb = raw[p + sname]
        s = to_f32(sdt, sb).reshape(sshape)
        if method == 'fp8':
            s = np.repeat(np.repeat(s, 128, 0), 128, 1)[:o, :i]
        w = vals * s
    norm = to_f32(*raw['model.norm.weight'][::2])
    emb = to_f32(*raw['model.embed_tokens.weight'][::2])
    print(f"{d}: OK  {len(meta)} tensors in {len(files)} file(s); torch_dtype={cfg['torch_dtype']} quant={method}; "
          f"down_proj dequant std={w.std():.4f} mean={w.mean():+.5f}; embed std={emb.std():.4f}; norm mean={norm.mean():.3f}")

for d in sys.argv[1:]:
    check(d)
