"""Mel front ends: HTK/Slaney filterbanks with SpecAugment (``mel``), the kaldi-style front end (``kaldi``)."""
