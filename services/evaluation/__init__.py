"""Year-end evaluation of TKS: indicators from recruitment, groups and mentoring events, a cycle
per year (open, preview, close), outcomes published on `tkm.evaluation.v1`."""
