"""Signed evidence of a verdict: an in-toto Statement (statement.py) in a DSSE envelope (dsse.py), written to a
file or stored next to the image in its registry as cosign does (oci.py), and checked by `baseimage-report verify`
(verify.py). Sources: /work/shared/WAVE2-FACTS.md, "Attestations"."""
