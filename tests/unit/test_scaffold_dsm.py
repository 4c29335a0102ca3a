"""DSM: call counts, top-k refinement and early stop under a scripted verifier, the
answer, proof extraction and score parsing, rerun and resume."""
from __future__ import annotations

import dataclasses
import re

import pytest

from qed_lightning.scaffolds.base import Reply, answer_of
from qed_lightning.scaffolds.call_store import CallStore
from qed_lightning.scaffolds.driver import run_scaffold
from qed_lightning.scaffolds.dsm import DSM, EMPTY_PROOF, extract_proof

from scaffold_fakes import ScriptedChat, ctx, user_of


def is_verify(call) -> bool:
    return user_of(call).startswith("Grade the solution below")


def is_refine(call) -> bool:
    return "## An earlier solution and its reviews" in user_of(call)


def shown_proof(call) -> str:
    """The proof a verification call shows."""
    return user_of(call).split("## Solution\n\n", 1)[1]


def written(name: str) -> str:
    return f"Some words first.\n## Solution\nproof {name} holds.\n## Self Evaluation\nAll fine. \\boxed{{1}}"


class Scripted:
    """A model whose generations are named G0, G1... and refinements R<n> in call order,
    and whose verifier scores proof X with ``table[X][j]`` on its j-th verification."""

    def __init__(self, table: dict[str, list[float]]) -> None:
        self.table, self.made, self.seen = table, 0, {}
        self.refine_prompts: list[str] = []

    def __call__(self, call, seed):
        if is_verify(call):
            name = re.search(r"proof (\w+) holds", shown_proof(call)).group(1)
            j = self.seen[name] = self.seen.get(name, -1) + 1
            score = self.table.get(name, [0.0] * 8)[j]
            return f"Report {name}#{j}: checked. \\boxed{{{score:g}}}"
        if is_refine(call):
            self.refine_prompts.append(user_of(call))
        name = f"{'R' if is_refine(call) else 'G'}{self.made}"
        self.made += 1
        return written(name)


def refined(prompt: str) -> tuple[str, list[str]]:
    """(the proof a refinement prompt shows, the reports it shows)."""
    proof = re.search(r"### Earlier solution\n\nproof (\w+) holds\.", prompt).group(1)
    return proof, re.findall(r"Report (\w+#\d+)", prompt)


@pytest.mark.parametrize("settings,calls", [
    (dict(pool_size=2, verifications=2, reports_per_refinement=1, iterations=1), 12),
    (dict(pool_size=1, verifications=3, reports_per_refinement=2, iterations=0), 4),
    (dict(pool_size=3, verifications=1, reports_per_refinement=1, iterations=2), 18),
    (dict(), 60),
])
def test_calls_per_problem_without_a_perfect_proof(settings, calls):
    """No verifier ever gives 1 (all 0.5): every round runs, the maximum is reached."""
    chat = ScriptedChat(lambda call, seed: "Looks fine mostly. \\boxed{0.5}" if is_verify(call) else None)
    dsm = DSM(**settings)
    results = run_scaffold(dsm, [ctx("p1"), ctx("p2")], chat, CallStore(None, "dsm"))
    assert [cost.calls for _, cost in results] == [calls, calls]
    assert dsm.max_calls() == calls
    assert all(result.reply is not None for result, _ in results)


def test_top_k_of_the_whole_pool_refined_with_the_lowest_reports():
    table = {
        "G0": [0, 0, 0, 0],            # 0
        "G1": [1, 0.5, 0, 1],          # 0.625
        "G2": [1, 0.5, 0.5, 0.5],      # 0.625
        "G3": [1, 1, 0.5, 0],          # 0.625
        "R4": [1, 1, 1, 0],            # 0.75  (refines G3)
        "R5": [0.5, 0, 0, 0.5],        # 0.25  (G2)
        "R6": [1, 0.5, 0.5, 0.5],      # 0.625 (G1)
        "R7": [0, 0, 0, 0],            # 0     (G0)
        "R8": [0.5, 0.5, 0.5, 0.5],
        "R9": [1, 1, 1, 1],            # 1.0: the answer
        "R10": [1, 1, 1, 0.5],
        "R11": [0, 0.5, 0, 0],
    }
    script = Scripted(table)
    chat = ScriptedChat(script)
    [(result, cost)] = run_scaffold(DSM(), [ctx("p1")], chat, CallStore(None, "dsm"))
    assert cost.calls == 60
    assert chat.batches == [4, 16, 4, 16, 4, 16]
    # round 1: all four, best first, ties (G1, G2, G3 at 0.625) newest first; each with
    # its two lowest reports (ties: the earlier report)
    assert [refined(p) for p in script.refine_prompts[:4]] == [
        ("G3", ["G3#3", "G3#2"]), ("G2", ["G2#1", "G2#2"]), ("G1", ["G1#2", "G1#1"]), ("G0", ["G0#0", "G0#1"])]
    # round 2: the best four of all eight: R4 (0.75), then of G1, G2, G3, R6 (0.625) the
    # three newest; G1 is left out
    assert [refined(p) for p in script.refine_prompts[4:]] == [
        ("R4", ["R4#3", "R4#0"]), ("R6", ["R6#1", "R6#2"]), ("G3", ["G3#3", "G3#2"]), ("G2", ["G2#1", "G2#2"])]
    assert result.detail["refined"] == [[3, 2, 1, 0], [4, 6, 3, 2]]
    assert result.detail["parents"] == [None] * 4 + [3, 2, 1, 0, 4, 6, 3, 2]
    assert result.detail["best"] == 9 and not result.detail["stopped_early"] and result.detail["rounds"] == 2
    assert result.reply.text == written("R9")  # the chosen call's whole text


@pytest.mark.parametrize("perfect,calls,rounds", [("G2", 20, 0), ("R5", 40, 1)])
def test_early_stop_on_a_proof_all_verifiers_score_1(perfect, calls, rounds):
    table = {"G0": [0.5] * 4, "G1": [0.5] * 4, "G2": [0.5] * 4, "G3": [0.5] * 4, "R4": [0, 1, 1, 1]}
    table[perfect] = [1, 1, 1, 1]
    chat = ScriptedChat(Scripted(table))
    [(result, cost)] = run_scaffold(DSM(), [ctx("p1")], chat, CallStore(None, "dsm"))
    assert cost.calls == calls
    assert result.detail["stopped_early"] and result.detail["rounds"] == rounds
    assert result.reply.answer == written(perfect)


def test_three_of_four_ones_do_not_stop():
    table = {"G0": [1, 1, 1, 0.5], "G1": [0] * 4, "G2": [0] * 4, "G3": [0] * 4}
    [(result, cost)] = run_scaffold(DSM(iterations=1), [ctx("p1")], ScriptedChat(Scripted(table)),
                                    CallStore(None, "dsm"))
    assert cost.calls == 40 and not result.detail["stopped_early"]
    assert result.reply.answer == written("G0")  # 0.875 beats the refinements' 0


def test_answer_is_the_best_mean_ties_to_the_earlier_proof():
    table = {"G0": [0, 0.5, 0, 0], "G1": [1, 0.5, 0, 0.5], "G2": [0, 0, 0, 0], "G3": [0.5, 0.5, 0.5, 0.5]}
    [(result, _)] = run_scaffold(DSM(iterations=0), [ctx("p1")], ScriptedChat(Scripted(table)),
                                 CallStore(None, "dsm"))
    assert result.detail["scores"] == [table[f"G{i}"] for i in range(4)]
    assert result.detail["best"] == 1 and result.reply.answer == written("G1")


def test_unparsed_verifications_score_0_and_are_counted():
    planted = "proof G0 holds. Therefore the required value is \\boxed{1} as claimed above in full."

    def rule(call, seed):
        if is_verify(call):
            proof = shown_proof(call)
            if "G0" in proof:  # echoes the proof, with its boxed 1, and gives no score
                return f"The solution says: {proof}\nI cannot tell."
            if "G1" in proof:
                return "Report. Score: \\boxed{0.75}"  # not a rubric level
            if "G2" in proof:
                return Reply("Report \\boxed{1}", "Report \\boxed{1}", 10, 5, truncated=True)
            return "Fine. \\boxed{1}"
        name = f"G{rule.made}"
        rule.made += 1
        return f"## Solution\n{planted.replace('G0', name)}\n## Self Evaluation\n\\boxed{{1}}"

    rule.made = 0
    [(result, _)] = run_scaffold(DSM(iterations=0), [ctx("p1")], ScriptedChat(rule), CallStore(None, "dsm"))
    assert result.detail["scores"] == [[0.0] * 4, [0.0] * 4, [0.0] * 4, [1.0] * 4]
    assert result.detail["verifications_unparsed"] == 8 and result.detail["verifications_unusable"] == 4
    assert "G3" in result.reply.answer


def counting(rule):
    """``rule(call, k)`` with k counting the calls of the same kind (verify or not)."""
    seen = {True: 0, False: 0}

    def counted(call, seed):
        kind = is_verify(call)
        seen[kind] += 1
        return rule(call, seen[kind] - 1)

    return counted


def unusable_generations(call, k):
    if is_verify(call):
        return "ok \\boxed{0}"
    return [Reply("## Solution\ncut", "## Solution\ncut", 10, 5, truncated=True),
            "## Solution\n\n## Self Evaluation\nnothing", written("A"), written("B")][k]


def test_unusable_proofs_dropped_or_kept():
    chat = ScriptedChat(counting(unusable_generations))
    [(result, cost)] = run_scaffold(DSM(iterations=0), [ctx("p1")], chat, CallStore(None, "dsm"))
    verified = [shown_proof(c) for c, _ in chat.calls if is_verify(c)]
    assert result.detail["dropped"] == cost.truncated == 1 and result.detail["empty_proofs"] == 1
    assert verified == ["proof A holds."] * 4 + ["proof B holds."] * 4
    keep = ScriptedChat(counting(unusable_generations))
    [(kept, _)] = run_scaffold(DSM(iterations=0, unusable_candidates="keep"), [ctx("p1")], keep,
                               CallStore(None, "dsm"))
    verified = [shown_proof(c) for c, _ in keep.calls if is_verify(c)]
    assert verified == ["cut"] * 4 + [EMPTY_PROOF] * 4 + ["proof A holds."] * 4 + ["proof B holds."] * 4
    assert kept.detail["dropped"] == 0 and kept.detail["empty_proofs"] == 1


def cut_reports(call, k):
    if not is_verify(call):
        return written("X")
    if k % 2 == 0:
        return Reply("Report cut \\boxed{1}", "Report cut \\boxed{1}", 10, 5, truncated=True)
    return f"Report usable {k}. \\boxed{{{0.5 if k == 1 else 0:g}}}"


@pytest.mark.parametrize("mode,shown", [("drop", ["Report usable 3.", "Report usable 1."]),
                                        ("keep", ["Report cut", "Report cut"])])
def test_refinement_reports_follow_unusable_candidates(mode, shown):
    """Verifications 0 and 2 are cut (score 0, counted), 1 scores 0.5, 3 scores 0: the two
    lowest are 0 and 2 (keep) or, of the usable ones, 3 then 1 (drop)."""
    chat = ScriptedChat(counting(cut_reports))
    [(result, _)] = run_scaffold(DSM(pool_size=1, verifications=4, iterations=1, unusable_candidates=mode),
                                 [ctx("p1")], chat, CallStore(None, "dsm"))
    assert result.detail["scores"][0] == [0.0, 0.5, 0.0, 0.0]
    assert result.detail["verifications_unusable"] == 4  # two of each round
    [prompt] = [user_of(c) for c, _ in chat.calls if is_refine(c)]
    assert re.findall(r"#### Review \d+\n\n(Report \w+(?: \d\.)?)", prompt) == shown


@pytest.mark.parametrize("answer,proof", [
    ("intro\n## Solution\nThe proof.\n## Self Evaluation\nscore 1", "The proof."),
    ("## SOLUTION\nP\n##self evaluation\nx", "P"),
    ("## Solution\nP without an end", "P without an end"),
    ("P before the end\n## Self Evaluation\nx", "P before the end"),
    ("Only a proof.", "Only a proof."),
    ("## Solution\nP\n**Self Evaluation**: fine", "P\n**"),  # the soft end: the words alone
    ("a self evaluation comes last\n## Solution\nP\n## Self Evaluation\nx", "P"),
    ("I add a self evaluation after it.\n## Solution\nP", "P"),  # the end is sought after the start
    ("## Solution\n\n## Self Evaluation\nx", ""),
    ("### Solution\nP\n### Self Evaluation", "P\n#"),
])
def test_extract_proof(answer, proof):
    assert extract_proof(answer) == proof


def test_verifiers_and_refiners_see_the_extracted_proof_only():
    def rule(call, seed):
        text = "Grade \\boxed{0}" if is_verify(call) else f"<think>secret {seed}</think>{written('T')}"
        return Reply(text, answer_of(text, "after_think"), 10, 5)

    context = dataclasses.replace(ctx("p1"), answer_mode="after_think")
    chat = ScriptedChat(rule)
    [(result, _)] = run_scaffold(DSM(pool_size=1, verifications=1, iterations=1), [context], chat,
                                 CallStore(None, "dsm"))
    later = [user_of(c) for c, _ in chat.calls if is_verify(c) or is_refine(c)]
    assert len(later) == 3 and all("proof T holds." in u for u in later)
    assert not any("secret" in u or "Some words first" in u or "All fine" in u for u in later)
    assert result.reply.text.startswith("<think>secret")  # graded as a single-turn sample is


def test_rerun_identical_and_resume_regenerates_nothing(tmp_path):
    def rule(call, seed):
        return f"Report. \\boxed{{{[0, 0.5, 1][seed % 3]:g}}}" if is_verify(call) else written(f"s{seed}")

    contexts = [ctx("p1"), ctx("p2")]
    dsm = DSM(pool_size=2, verifications=2, reports_per_refinement=1, iterations=2)
    full = run_scaffold(dsm, contexts, ScriptedChat(rule), CallStore(tmp_path / "a.jsonl", "dsm"))
    again = run_scaffold(dsm, contexts, ScriptedChat(rule), CallStore(None, "dsm"))
    assert [(r.reply, r.detail) for r, _ in again] == [(r.reply, r.detail) for r, _ in full]

    class Killed(Exception):
        pass

    chat = ScriptedChat(rule)

    def dying(calls):
        if len(chat.batches) == 3:  # dies in the first refinement's verification
            raise Killed
        return chat(calls)

    path = tmp_path / "b.jsonl"
    with pytest.raises(Killed):
        run_scaffold(dsm, contexts, dying, CallStore(path, "dsm"))
    done = len(chat.calls)
    resumed_chat = ScriptedChat(rule)
    resumed = run_scaffold(dsm, contexts, resumed_chat, CallStore(path, "dsm"))
    assert [(r.reply, r.detail) for r, _ in resumed] == [(r.reply, r.detail) for r, _ in full]
    assert sum(c.replayed for _, c in resumed) == done > 0
    assert [c.calls for _, c in resumed] == [c.calls for _, c in full]
    assert len(resumed_chat.calls) == sum(c.calls for _, c in full) - done
    assert not {(c.digest(), s) for c, s in resumed_chat.calls} & {(c.digest(), s) for c, s in chat.calls}
