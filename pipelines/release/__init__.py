"""Release: which version serves. Retrain a challenger, gate it against the champion, roll back.

- `retrain`: `pulsecast retrain`: new records -> grown dataset -> challenger -> gate -> publish;
  `challenger`: the champion read from the store, the challenger fitted and both scored on the
  same windows.
- `gate`: the promotion decision, a pure function of the two evaluations.
- `rollback`: `pulsecast rollback`: a published version serves again.

On disk: new versions in `data/model_store/<model>/<version>/` (through `models.store.publish`,
with `parent_version` and the comparison in `pulsecast.json`), the grown dataset renamed over the
old one only on promotion, and the run folder `runs/<model>/retrain-<UTC time>/` (`drift.json`,
`drift.md`, `evaluation/`, `retrain.json`, `retrain.md`).
"""
