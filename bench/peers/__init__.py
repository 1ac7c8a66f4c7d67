"""Peers pulsecast is measured against in `bench/`, each trained and run in its own process.

`darts_lstm`: Darts' `BlockRNNModel(model="LSTM")` (torch), trained on pulsecast's own training
windows and scored on pulsecast's own held-out windows (issue 16, item 6). Needs the `bench`
extra (`pip install -e '.[bench]'`); every peer says so and is skipped when it is missing.
"""
