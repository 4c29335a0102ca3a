"""The SFT config keeps the checkpoints a user needs to pick RL's starting point: the
paper started RL from SFT step 372 (and tried 248 and 434)."""
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_sft_config_keeps_the_paper_candidate_steps_on_its_cadence():
    checkpoint = yaml.safe_load((ROOT / "configs/sft/qed_nano_sft.yaml").read_text())["checkpoint"]
    every = checkpoint["every_n_train_steps"]
    kept = set(checkpoint.get("keep_steps", []))
    assert {248, 372, 434} <= kept or checkpoint["keep_last"] == -1
    # a kept step is only written if the cadence reaches it
    assert all(step % every == 0 for step in kept), (every, sorted(kept))
