"""benchmarks/cpu_ablation.py: one T_lab for every run, seed by seed, and the table."""

import json

from benchmarks import cpu_ablation


def fake_result(accuracy, epochs):
    return {"lab_epoch": {"seconds": 500.0}, "train_images": 49_000,
            "budget": {"epochs": epochs, "spent_s": 100.0, "share_spent": 0.999},
            "test": {"accuracy": accuracy, "top5_accuracy": 0.8},
            "test_flip_averaged": {"accuracy": accuracy + 0.01, "top5_accuracy": 0.81}}


def test_every_change_runs_seed_by_seed_on_one_t_lab_and_is_tabled(tmp_path, monkeypatch):
    calls = []

    def fake_train(change, seed, args, lab_seconds):
        calls.append((change, seed, lab_seconds))
        return None if change == "whiten" and seed == 2 else fake_result(0.5 + seed / 100, 2.0)

    monkeypatch.setattr(cpu_ablation, "train", fake_train)
    code = cpu_ablation.main(["--lab-seconds", "321", "--lab-epochs", "0.2", "--seeds", "1",
                              "2", "--changes", "recipe", "whiten", "--out", str(tmp_path)])
    assert code == 1  # one run failed, and says so
    assert calls == [("recipe", 1, 321.0), ("whiten", 1, 321.0), ("recipe", 2, 321.0),
                     ("whiten", 2, 321.0)]
    table = (tmp_path / "ablation.md").read_text().splitlines()
    assert "T_lab 321 s, budget 0.2 × T_lab" in table[0]
    # 49,000 images x 2 epochs in 100 s
    assert "| recipe | 1 | 51.00% | 80.00% | 52.00% | 980 | 2.0 | 99.9% |" in table
    assert "| whiten | 2 | failed | | | | | |" in table


def test_the_table_alone_reads_the_runs_already_written(tmp_path):
    (tmp_path / "cpu-seed1-0.5lab-recipe.json").write_text(json.dumps(fake_result(0.6, 4.0)))
    code = cpu_ablation.main(["--table-only", "--lab-epochs", "0.5", "--seeds", "1",
                              "--changes", "recipe", "--out", str(tmp_path)])
    assert code == 0
    table = (tmp_path / "ablation.md").read_text()
    assert "T_lab 500 s" in table and "| recipe | 1 | 60.00% |" in table
