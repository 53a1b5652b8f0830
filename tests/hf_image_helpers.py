"""Set-up and checks shared by the Hugging Face image-model tests (test_hf_vit.py, test_hf_dinov2.py,
test_hf_dinov2_registers.py, test_hf_beit.py, test_hf_swin.py): a tiny random transformers model saved with
save_pretrained, read by forgegrad's from_pretrained, and compared.

    save_checkpoints        each (transformers class, extra config) seeded, made, randomized, saved: {key: (path, hf)}
    randomize_parameters    the parameters that start at zeros / constants (tokens, tables, layer scales): normal
    pixels                  a random image batch (batch, channels, height, width), float32
    compared / close        the tensors compared of an output (last_hidden_state and pooler_output, or logits), and
                            their closeness within float32 rounding scaled by the tensor's size
    close_grad              a parameter's gradient against transformers' (float64) one
    processed_as_transformers  random uint8 images through load_image_processor of a preprocessor_config.json: the
                            pixel values are transformers' (PIL backend) bit for bit
    check_outputs           forgegrad's model and transformers' (an attention implementation) on images of several
                            shapes: the outputs without and with hidden states are transformers'
    check_encoder_from_classifier  the encoder class reads a classifier checkpoint's weights; a config.json naming
                            no architecture loads as the encoder by its model_type
    check_save_round_trip   forgegrad's save_pretrained directory read back by transformers: the same outputs
    check_onnx_export       export_vit's graph in onnxruntime gives transformers' outputs at batches 1 and 3

torch and transformers are imported inside the functions: the test files skip themselves where they are missing.
"""
from __future__ import annotations

import json

import numpy as np

import forgegrad as fg
from forgegrad.models import from_pretrained, save_pretrained

TOL = dict(rtol=1e-4, atol=2e-5)


def save_checkpoints(tmp_path_factory, checkpoints, make_config, randomize=None):
    """``checkpoints``: key -> (transformers class name, extra config); ``make_config(class name, extra)`` builds
    the config. Model i is made under torch.manual_seed(i), in eval mode, passed through ``randomize`` and saved in
    a directory named by its key."""
    import torch
    import transformers
    out = {}
    for i, (key, (cls, extra)) in enumerate(checkpoints.items()):
        torch.manual_seed(i)
        hf = getattr(transformers, cls)(make_config(cls, extra)).eval()
        if randomize is not None:
            hf = randomize(hf)
        path = tmp_path_factory.mktemp(key)
        hf.save_pretrained(path)
        out[key] = (path, hf)
    return out


def randomize_parameters(hf, suffixes):
    """Normal values in the parameters whose names end with one of ``suffixes``; returns ``hf``."""
    import torch
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if name.endswith(tuple(suffixes)):
                p.normal_()
    return hf


def pixels(batch, h=32, w=32, seed=0, channels=3):
    return np.random.default_rng(seed).standard_normal((batch, channels, h, w)).astype(np.float32)


def compared(out):
    """(last_hidden_state, pooler_output) or (logits,) of either library's output."""
    if hasattr(out, "last_hidden_state"):
        return [out.last_hidden_state, out.pooler_output]
    return [out.logits if hasattr(out, "logits") else out]


def close(got, want, msg=""):
    """Equal within float32 rounding, the absolute part scaled by the tensor's size (the residual stream before the
    final LayerNorm reaches ~20 with random layer scales)."""
    for g, w in zip(got, want, strict=True):
        w = w.numpy()
        np.testing.assert_allclose(g.numpy(), w, rtol=TOL["rtol"], atol=TOL["atol"] * max(1.0, np.abs(w).max()),
                                   err_msg=msg)


def close_grad(param, want, name):
    """A forgegrad parameter's gradient against transformers' float64 one (2e-3 relative, 2e-4 of its largest)."""
    np.testing.assert_allclose(param.grad.numpy(), want, rtol=2e-3, atol=2e-4 * np.abs(want).max(), err_msg=name)


def processed_as_transformers(folder, settings: dict, sizes, side: int):
    """Random uint8 images of (height, width) ``sizes`` (seed 8) through load_image_processor of the
    preprocessor_config.json holding ``settings`` written into ``folder``: the pixel values (batch, 3, side, side)
    are transformers' (its PIL backend) bit for bit. Returns (forgegrad's pixels, transformers' torch tensor)."""
    import transformers

    from forgegrad.models.hf import load_image_processor
    (folder / "preprocessor_config.json").write_text(json.dumps(settings))
    rng = np.random.default_rng(8)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]
    pixels = load_image_processor(folder)(images)["pixel_values"]
    want = transformers.AutoImageProcessor.from_pretrained(folder, backend="pil")(
        images, return_tensors="pt")["pixel_values"]
    assert pixels.shape == (len(sizes), 3, side, side)
    np.testing.assert_array_equal(pixels, want.numpy())
    return pixels, want

def check_outputs(path, architecture: str, shapes, layers: int, attn: str = "eager", label: str = ""):
    """transformers' ``architecture`` (``attn_implementation=attn``) and forgegrad's from_pretrained of ``path`` (its
    class of that name) on random pixels of each (batch, height, width) of ``shapes`` (seeded by its index): the plain
    output and the one with hidden states (``layers`` + 1 of them) are transformers'. Returns (model, the last plain
    output, the last with hidden states) for the caller's own checks."""
    import torch
    import transformers
    from forgegrad.models import hf as fg_hf
    hf = getattr(transformers, architecture).from_pretrained(path, attn_implementation=attn).eval()
    model = from_pretrained(path)
    assert type(model) is getattr(fg_hf, architecture)
    for i, (b, h, w) in enumerate(shapes):
        x = pixels(b, h, w, seed=i)
        with torch.no_grad():
            want = hf(torch.tensor(x), output_hidden_states=True)
        with fg.no_grad():
            plain, got = model(x), model(x, output_hidden_states=True)
        close(compared(plain), compared(want), f"{label} {(b, h, w)}")
        close(compared(got), compared(want), f"{label} {(b, h, w)}")
        assert len(got.hidden_states) == layers + 1
        close(got.hidden_states, want.hidden_states, f"{label} {(b, h, w)} hidden states")
    return model, plain, got

def check_encoder_from_classifier(checkpoints, encoder_cls, hf_encoder, tmp_path, *, classifier="classifier",
                                  eval_mode=False):
    """``encoder_cls.from_hf`` reads the ``classifier`` checkpoint's encoder weights and gives the outputs of
    ``hf_encoder(hf)`` (the classifier's encoder module) on a 24 x 40 batch; the "model" checkpoint with no
    architectures in its config.json loads as ``encoder_cls`` by its model_type."""
    import torch
    path, hf = checkpoints[classifier]
    tensors = {k: v.numpy() for k, v in from_pretrained(path).state_dict().items()}
    encoder = encoder_cls(dict(hf.config.to_dict()))
    encoder.load_state_dict(encoder.from_hf(tensors))
    if eval_mode:
        encoder.eval()
    x = pixels(2, 24, 40, seed=5)
    with torch.no_grad():
        want = hf_encoder(hf)(torch.tensor(x))
    with fg.no_grad():
        close(compared(encoder(x)), compared(want))
    path, _ = checkpoints["model"]
    (tmp_path / "model.safetensors").write_bytes((path / "model.safetensors").read_bytes())
    cfg = json.loads((path / "config.json").read_text())
    del cfg["architectures"]
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert type(from_pretrained(tmp_path)) is encoder_cls


def check_save_round_trip(path, hf, hf_class, saved, x, hf_call=None):
    """forgegrad's save_pretrained of the checkpoint at ``path``, read by transformers' ``hf_class`` (a name), gives
    exactly the outputs of ``hf`` (or of ``hf_call(tensor)``) on ``x``."""
    import torch
    import transformers
    save_pretrained(from_pretrained(path), saved)
    back = getattr(transformers, hf_class).from_pretrained(saved).eval()
    hf_call = hf if hf_call is None else hf_call
    with torch.no_grad():
        for g, w in zip(compared(back(torch.tensor(x))), compared(hf_call(torch.tensor(x)))):
            np.testing.assert_array_equal(g.numpy(), w.numpy())


def check_onnx_export(path, hf, size, tmp_path, hf_call=None):
    """export_vit at image size ``size`` (None: the config's 32 x 32; an int or (height, width)): the outputs are
    vit_names' and equal transformers' (``hf``, or ``hf_call(tensor)``) in onnxruntime at batches 1 and 3."""
    import onnxruntime as ort
    import torch

    from forgegrad.models.hf.onnx_vit import export_vit, vit_names
    model = from_pretrained(path)
    report = export_vit(model, str(tmp_path / "m.onnx"), image_size=size)
    assert report.ok, report
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == vit_names(model)[1]
    h, w = (32, 32) if size is None else (size, size) if isinstance(size, int) else size
    hf_call = hf if hf_call is None else hf_call
    for batch in (1, 3):
        x = pixels(batch, h, w, seed=batch)
        with torch.no_grad():
            want = compared(hf_call(torch.tensor(x)))
        for g, ref in zip(sess.run(None, {"pixel_values": x}), want, strict=True):
            np.testing.assert_allclose(g, ref.numpy(), **TOL)


def check_training_step(hf, model, ids, mask, px, keys):
    """CLIP / SigLIP with return_loss on (ids, mask, px) in training mode: the loss equals transformers', both have
    the same parameters, and the gradients named in ``keys`` equal torch's."""
    import torch
    ref = hf(input_ids=torch.tensor(ids), pixel_values=torch.tensor(px), attention_mask=torch.tensor(mask),
             return_loss=True)
    ref.loss.backward()
    out = model(ids, px, mask, return_loss=True)
    np.testing.assert_allclose(out.loss.numpy(), ref.loss.detach().numpy(), rtol=1e-5)
    out.loss.backward()
    torch_grads = {k: p.grad for k, p in hf.named_parameters()}
    grads = dict(model.named_parameters())
    assert set(grads) == set(torch_grads)
    for key in keys:
        np.testing.assert_allclose(grads[key].grad.numpy(), torch_grads[key].numpy(), rtol=1e-3, atol=1e-6,
                                   err_msg=key)
