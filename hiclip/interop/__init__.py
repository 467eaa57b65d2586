"""Bringing models in and out: transformers ``CLIPModel`` folders and CLIP-style tools.

* :mod:`hiclip.interop.hf_clip`: :func:`~hiclip.interop.hf_clip.import_clip` reads a local
  ``CLIPModel`` folder into a hiclip model and tokenizer (optionally adding fresh affinity
  modules: ``--hierarchy``); :func:`~hiclip.interop.hf_clip.export_hf` writes a vanilla hiclip
  checkpoint as a ``CLIPModel`` folder. ``hiclip import-clip`` / ``hiclip export-hf``.
* :mod:`hiclip.interop.clip_style`: :func:`~hiclip.interop.clip_style.load_clip_style` returns the
  open_clip-style ``(model, transform, tokenizer)`` triple that CLIP_benchmark's loaders return.

Nothing here downloads anything: every path is a local folder.
"""
