"""Plant known faults, one at a time, in a temporary copy of the repository and check that
the tests named after each claim catch it (fail). Prints one line per fault and exits 1 if
any fault survives.

    python -m scripts.mutation_check            # every fault
    python -m scripts.mutation_check plora_generate no_cross_ignored

Each fault is a literal replacement in one file; if the code it targets has moved, the
fault reports "stale" (and counts as a failure) so this list is kept up to date."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Fault:
    name: str
    claim: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


FAULTS = (
    Fault("plora_generate", "PLoRA acts at speech positions during generation", "es4r/modeling/model.py",
          "            with speech_positions(mask if mask.any() else None):\n"
          "                output = self.llm.generate(",
          "            with speech_positions(None):\n                output = self.llm.generate(",
          ("tests/test_model.py::test_plora_acts_at_speech_positions_during_generation",)),
    Fault("plora_onnx_prefill", "PLoRA acts at speech positions when ONNX Runtime reads the prompt",
          "es4r/modeling/onnx_decode.py",
          "prompt_gate = gate.float()[..., None] if gate is not None else torch.zeros(1, positions, 1)",
          "prompt_gate = torch.zeros(1, positions, 1)",
          ("tests/test_onnx_decode.py::test_the_speech_path_replies_are_generates_with_plora_acting",)),
    Fault("intra_crosses_turns", "intra-turn attention never crosses turns", "es4r/modeling/dual_attention.py",
          "padded = nn.utils.rnn.pad_sequence(flat, batch_first=True)  # (N_turns, L_max, D)",
          "padded = nn.utils.rnn.pad_sequence(flat, batch_first=True)\n"
          "            padded = padded + padded.flip(0).mean(1, keepdim=True)",
          ("tests/test_dual_attention.py",)),
    Fault("encoder_reversed", "the untrained encoder sees the original log-mels in order", "es4r/modeling/model.py",
          "encoded = encode(encoder, window.to(dtype), self.whisper.runtime)",
          "encoded = encode(encoder, window.flip(-1).to(dtype), self.whisper.runtime)",
          ("tests/test_model.py::test_untrained_whisper_encoder_input_is_the_log_mels_in_order",)),
    Fault("study_name_leak", "no system name on any study page", "es4r/study/ui.py",
          'status = (f"**Item {done.done + 1} of {done.total}** · annotator `{who}`"',
          'status = (f"**Item {done.done + 1} of {done.total}** · annotator `{who}` · {store.spec.systems}"',
          ("tests/test_study_browser.py",)),
    Fault("accelerate_unsharded", "each process trains on its own samples", "es4r/training/trainer.py",
          "wrapper, optimizer, loader = accelerator.prepare(wrapper, optimizer, loader)",
          "wrapper, optimizer, _ = accelerator.prepare(wrapper, optimizer, loader)",
          ("tests/test_training.py::test_two_processes_under_accelerate_sync_gradients",)),
    Fault("no_cross_ignored", "the no_cross ablation passes S through", "es4r/modeling/cross_modal.py",
          "if not self.config.enabled:", "if False:",
          ("tests/test_adapter_cross.py",)),
    Fault("no_dual_variant_inert", "the no_dual system changes what the LLM reads", "es4r/systems.py",
          "return replace(config, dual=replace(config.dual, enabled=False))",
          "return replace(config, dual=replace(config.dual))",
          ("tests/test_evaluate_bench.py::test_ablations_change_what_the_llm_reads",)),
    Fault("growth_always_within", "bench says when cost grows faster than linear", "es4r/bench.py",
          'verdict = "within" if factor <= linear else "ABOVE"', 'verdict = "within"',
          ("tests/test_evaluate_bench.py::test_growth_check_on_constructed_timings",)),
    Fault("latency_sums_rates", "latency total = stage seconds + other, rates apart", "es4r/ui/format.py",
          "total = result.timings.get(WALL, sum(seconds))", "total = sum(result.timings.values())",
          ("tests/test_app_unit.py::test_text_views",)),
    Fault("strategy_reason_wrong", "strategy reasons quote the real change", "es4r/voice/strategy.py",
          'f"energy rose {change:.0%} since the last turn → encourage"',
          'f"energy rose {change / 2:.0%} since the last turn → encourage"',
          ("tests/test_strategy_fusion.py",)),
    Fault("prosody_gate_open", "the prosody term starts closed", "es4r/modeling/cross_modal.py",
          "self.prosody_gate = nn.Parameter(torch.zeros(width))",
          "self.prosody_gate = nn.Parameter(torch.full((width,), 0.5))",
          ("tests/test_prosody.py",)),
    Fault("reply_cue_dropped", "the reply cue reaches the tokens that open the reply", "es4r/modeling/model.py",
          "                suffix = suffix + cues[index].to(suffix.dtype)",
          "                suffix = suffix + 0 * cues[index].to(suffix.dtype)",
          ("tests/test_affect_pairs.py::test_reply_cue_starts_at_zero_and_follows_the_last_turn",)),
    Fault("pair_margin_not_swapped", "the affect pair margin comes from swapping the audio", "es4r/training/affect_pairs.py",
          "margin = (logp[0] - logp[1]) - (logp[2] - logp[3])",
          "margin = (logp[0] - logp[1]) + (logp[2] - logp[3])",
          ("tests/test_affect_pairs.py::test_margin_comes_from_the_audio_alone",)),
    Fault("speech_waits_for_text", "the first sentence is spoken while the next is written",
          "es4r/voice/sentence_speaker.py",
          "        for unit in units[len(self._queued):]:\n            self._queued.append(unit)",
          "        for unit in units[len(self._queued):len(self._queued)]:\n            self._queued.append(unit)",
          ("tests/test_sentence_speaker.py::test_the_first_sentence_plays_before_the_last_is_written",)),
    Fault("streamed_voice_rng_not_kept", "a reply spoken sentence by sentence is the file spoken at once",
          "es4r/voice/styletts2.py",
          "            else:\n                torch.set_rng_state(self._rng[0])",
          "            elif False:\n                torch.set_rng_state(self._rng[0])",
          ("tests/test_sentence_speaker.py::test_other_random_draws_between_sentences_change_nothing",)),
    Fault("turn_reads_input_late", "a turn sent while the last reply still plays is answered", "app.py",
          "        converse, [sent_audio, state, open_tab],", "        converse, [audio_in, state, open_tab],",
          ("tests/test_app_browser.py::test_the_reply_is_shown_and_heard_while_it_is_written",)),
    Fault("vad_threads_left_at_one", "the voice-activity check leaves torch's threads alone", "es4r/vad.py",
          "        torch.set_num_threads(threads)", "        pass",
          ("tests/test_audio.py::test_the_voice_activity_check_leaves_torch_threads_alone",)),
    Fault("opening_ban_inert", "the reply's opening keeps the contradicting stance out", "es4r/modeling/model.py",
          "OpeningBan(self.tokenizer, avoid_in_opening, self.token_ids) if avoid_in_opening else None", "None",
          ("tests/test_openings.py::test_generation_keeps_the_words_out_of_the_first_sentence",)),
    Fault("late_sentence_plays", "sending the next turn stops the reply before, later sentences too",
          "es4r/ui/reply_voice.js", "      if (turn < floor) return;", "",
          ("tests/test_app_browser.py::test_sending_the_next_turn_stops_the_reply_before",)),
    Fault("first_clause_unsettled", "a first clause is spoken only once no later text can change the split",
          "es4r/voice/text_normalize.py",
          "            return (head, rest) if len(rest.split()) >= MIN_SENTENCE_WORDS else None",
          "            return (head, rest) if rest.strip() else None",
          ("tests/test_sentence_speaker.py::test_ready_sentences_are_always_the_start_of_the_final_split",)),
    Fault("voice_starts_before_writer", "the voice session is built beside the LLM, not before it",
          "es4r/voice/sentence_speaker.py", "        self._utterance: Utterance | None = None\n",
          "        self._utterance: Utterance | None = start()\n",
          ("tests/test_sentence_speaker.py::test_the_voice_starts_beside_the_writer",)),
    Fault("wrong_guess_kept", "a first sentence rendered ahead is played only if it stands",
          "es4r/voice/sentence_speaker.py", "        if guess == unit and audio is not None:",
          "        if audio is not None:",
          ("tests/test_sentence_speaker.py::test_the_first_sentence_is_rendered_before_it_is_settled",)),
    Fault("speech_prefix_mask_unsliced", "after a cached system prompt, PLoRA still acts at the speech positions",
          "es4r/modeling/model.py", "            mask = batch.speech_mask[:, reused:]\n",
          "            mask = batch.speech_mask\n",
          ("tests/test_prefix_cache.py::test_the_speech_path_reuses_only_the_system_prompt_and_replies_the_same",)),
    Fault("asr_loop_timestamps", "the ASR's greedy loop asks for no timestamps, as Whisper's generate does",
          "es4r/modeling/asr.py", "    return [int(start), int(no_timestamps)]", "    return [int(start)]",
          ("tests/test_asr.py::test_the_greedy_loop_writes_what_generate_writes",)),
    Fault("prefix_cache_uncropped", "a reused cache holds only what the prompts share", "es4r/modeling/prefix_cache.py",
          "        cache.crop(reused - cache.get_seq_length())", "        pass",
          ("tests/test_prefix_cache.py::test_the_next_turn_reads_only_what_is_new_and_replies_the_same",)),
    Fault("text_path_encodes_speech", "the text path encodes no speech for its reply (the heatmaps come when asked)",
          "es4r/pipeline.py", "        if self.speech_path:\n            _report(progress, 0.2,",
          "        if True:\n            _report(progress, 0.2,",
          ("tests/test_pipeline.py::test_the_heatmaps_are_made_when_asked_not_on_the_way_to_a_reply",)),
    Fault("whisper_detects_language", "an English-only Whisper transcribes without language detection",
          "es4r/embedded/whisper_ct2.py", "    ) if multilingual else {}", '    ) if multilingual else {"lang_to_id": {}}',
          ("tests/test_embedded_whisper.py::test_real_tiny_en_transcribes_read_speech",)),
    Fault("onnx_decode_drops_bans", "decode steps in ONNX Runtime apply the caller's bans", "es4r/modeling/onnx_decode.py",
          "    chain.extend(p for p in processors if p is not None)", "",
          ("tests/test_onnx_decode.py::test_the_text_path_replies_are_generates",)),
    Fault("block_offsets_dropped", "4-bit blocks give back every weight, offsets included", "es4r/modeling/onnx_decode.py",
          "        y = add(\"Add\", [codes, add(\"MatMul\", [block_sums[x], constant(name + \".o\", blocks.offsets)], name + \"_offsets\")],\n                name)",
          "        y = add(\"Identity\", [codes], name)",
          ("tests/test_weight_blocks.py::test_replies_on_blocks_are_generates_on_both_paths",)),
    Fault("block_nibbles_swapped", "each 4-bit code sits where MatMulNBits reads it", "es4r/modeling/weight_blocks.py",
          "    packed = codes[..., 0::2] | (codes[..., 1::2] << 4)", "    packed = codes[..., 1::2] | (codes[..., 0::2] << 4)",
          ("tests/test_weight_blocks.py::test_logits_of_a_step_match_fp32",)),
    Fault("decode_threads_leak", "the decode loop's one torch thread holds for its own thread only",
          "es4r/modeling/onnx_decode.py",
          "    openmp.omp_set_num_threads(1)\n    try:\n        yield\n    finally:\n        openmp.omp_set_num_threads(before)",
          "    torch.set_num_threads(1)\n    try:\n        yield\n    finally:\n        torch.set_num_threads(before)",
          ("tests/test_onnx_decode.py::test_the_decode_loop_gives_torch_its_threads_back",)),
    Fault("onnx_prompt_one_position", "ONNX Runtime reads every new prompt position, each at its place",
          "es4r/modeling/onnx_decode.py",
          "            self._run(binding, embeds.float().numpy(), prompt_gate.numpy(), length, positions)\n"
          "            length += positions",
          "            self._run(binding, embeds[:, -1:].float().numpy(), prompt_gate[:, -1:].numpy(), length + positions - 1, 1)\n"
          "            length += positions",
          ("tests/test_onnx_decode.py::test_the_text_path_replies_are_generates",)),
    Fault("asr_positions_from_zero", "the ASR's ONNX Runtime steps read each token at its position",
          "es4r/modeling/whisper_onnx.py",
          "np.arange(length, length + count, dtype=np.int64)", "np.arange(0, count, dtype=np.int64)",
          ("tests/test_asr.py::test_onnx_steps_write_the_torch_loops_tokens",)),
    Fault("asr_cross_values_as_keys", "the ASR's cross-attention mixes the recording's values",
          "es4r/modeling/whisper_onnx.py",
          "out[f\"cross_v{i}\"] = split(attention.v_proj(encoded))", "out[f\"cross_v{i}\"] = split(attention.k_proj(encoded))",
          ("tests/test_asr.py::test_onnx_steps_write_the_torch_loops_tokens",)),
    Fault("fused_heads_mixed", "the pass without weights merges each position's heads back in order",
          "es4r/modeling/dual_attention.py",
          "return attention.out_proj(mixed.transpose(1, 2).reshape(batch, length, width))",
          "return attention.out_proj(mixed.reshape(batch, length, width))",
          ("tests/test_dual_attention.py::test_without_weights_the_same_features_and_no_weights",)),
    Fault("reply_runs_on", "a reply ends where the LLM begins another line (the user's next turn)", "es4r/reply_text.py",
          "    end = _NEXT_LINE.search(text)", "    end = None",
          ("tests/test_reply_text.py::test_the_reply_is_its_own_line",
           "tests/test_reply_text.py::test_generation_stops_when_another_line_begins")),
    Fault("last_sentence_waits_for_speak", "the last sentence is queued as soon as the final text is known",
          "es4r/pipeline.py", "                speaker.offer_final(text)", "                pass",
          ("tests/test_sentence_speaker.py::test_the_text_path_speaks_every_sentence_and_encodes_no_speech",)),
    Fault("warm_up_skips_mel", "the warm-up compiles what a first turn would", "es4r/audio.py",
          "    turn_energy(clip)\n", "",
          ("tests/test_audio.py::test_the_warm_up_reaches_what_a_turn_compiles",)),
    Fault("vad_off", "a turn without speech is refused", "es4r/pipeline.py",
          "if heard < self.config.audio.min_speech_seconds:", "if heard < 0:",
          ("tests/test_pipeline.py::test_failed_turn_keeps_the_conversation",)),
    Fault("reader_hears_listener", "the affect reader hears the user's turns only", "es4r/modeling/affect_reader.py",
          "            if role == USER and features is not None]",
          "            if features is not None]",
          ("tests/test_affect_reader.py::test_the_note_closes_the_speech_paths_prompt_only",)),
    Fault("reader_never_fitted", "training fits the affect reader before step 0 (the speech path trains with its notes)",
          "es4r/training/trainer.py", "    fits_reader = not config.train_only or", "    fits_reader = False and",
          ("tests/test_affect_reader.py::test_the_trainer_fits_the_reader_before_step_0_and_keeps_it",)),
    Fault("training_from_shipped", "a training run starts from the untrained ES4R parts, not the shipped checkpoint",
          "es4r/presets.py", 'resolve_config(preset, es4r_checkpoint="none")', "resolve_config(preset)",
          ("tests/test_training.py::test_a_training_run_starts_from_the_untrained_parts_whatever_checkpoint_is_set",)),
    Fault("references_unmatched", "frozen gate references must match the manifest row for row",
          "es4r/evaluation/references.py", "    if missing or extra:", "    if False:",
          ("tests/test_gates.py::test_frozen_references_replace_the_replies_and_refuse_another_corpus",)),
    Fault("affect_head_rate", "the AffectHead trains at affect_head_lr_scale x lr, as configured",
          "es4r/training/trainer.py", '"lr": config.lr * config.affect_head_lr_scale,', '"lr": config.lr,',
          ("tests/test_prosody.py::test_affect_head_trains_at_its_own_rate",)),
    Fault("speech_anchor_live", "the speech anchor compares with a frozen copy of the starting parts",
          "es4r/training/losses.py", "frozen = {name: copy.deepcopy(getattr(model, name)).eval().requires_grad_(False)",
          "frozen = {name: getattr(model, name).eval().requires_grad_(False)",
          ("tests/test_training.py::test_speech_anchor_keeps_the_cosines_between_dialogues",)),
    Fault("window_tail_ignored", "the speech path's encoder reads the turns plus its tail, not the whole window",
          "es4r/modeling/model.py",
          "frames = window_frames(int(dual.lengths.max()), self.config.window.speech_tail_frames, self.max_frames)",
          "frames = self.max_frames",
          ("tests/test_whisper_window.py::test_the_speech_path_encodes_only_the_turns_and_their_tail",)),
    Fault("window_positions_shifted", "a shorter window is Whisper's own layers and positions",
          "es4r/modeling/whisper_window.py",
          "hidden = hidden + encoder.embed_positions.weight[: hidden.shape[1]]",
          "hidden = hidden + encoder.embed_positions.weight[1 : hidden.shape[1] + 1]",
          ("tests/test_whisper_window.py::test_the_layers_are_transformers_forward_over_the_whole_window",)),
    Fault("weights_before_first_word", "the speech path's dual-level attention keeps no weights before the reply",
          "es4r/pipeline.py", "encoding = self.model.encode_speech([features], timings, need_weights=False)",
          "encoding = self.model.encode_speech([features], timings, need_weights=True)",
          ("tests/test_speech_path.py::test_the_speech_path_encodes_without_weights_and_the_maps_come_when_asked",)),
    Fault("voice_spare_other_seed", "the voice session built ahead is seeded as the next reply's",
          "es4r/voice/piper_engine.py", "self._spare = (seed, self._builder.submit(self._build_voice, seed))",
          "self._spare = (seed, self._builder.submit(self._build_voice, seed + 1))",
          ("tests/test_offline_voices.py::test_piper_next_session_is_built_ahead_and_speaks_the_same",)),
    Fault("voice_not_readied", "a spoken reply readies the voice for the conversation's next",
          "es4r/pipeline.py", "        self.voice.prepare(self.config.seed)", "        pass",
          ("tests/test_pipeline.py::test_a_spoken_reply_readies_the_voice_for_the_next",)),
    Fault("cache_into_speech", "the speech path's cache serves only the text before its first heard turn",
          "es4r/modeling/model.py", "return end if words_too else start",
          "return end if words_too else start + 2",
          ("tests/test_prefix_cache.py::test_the_speech_path_reuses_the_oldest_turns_read_as_text",)),
    Fault("cache_without_words", "in the words-then-S' layout the cache also serves the first heard turn's words",
          "es4r/modeling/model.py", "return end if words_too else start", "return start if words_too else start",
          ("tests/test_prefix_cache.py::test_in_the_words_then_s_prime_layout_the_first_heard_turns_words_come_from_the_cache",)),
    Fault("turn_mels_remade", "each turn's log-mel is made once, however often it is heard", "es4r/audio.py",
          "if kept is not None and kept[0] is audio:", "if kept is not None and kept[0] is audio and False:",
          ("tests/test_pipeline.py::test_each_turn_is_heard_from_one_log_mel",)),
    Fault("condolences_always_banned", "words of mourning are banned only when no death or loss was heard",
          "es4r/modeling/model.py", "generation.condolence_check and not heard_loss(", "generation.condolence_check or heard_loss(",
          ("tests/test_reply_bans.py::test_the_ban_joins_generation_only_when_no_loss_was_heard",)),
    Fault("reply_term_dropped", "the decode graph adds the reply tuning's low-rank term as torch does",
          "es4r/modeling/onnx_decode.py", '        if prefix + ".reply_down" in weights:', "        if False:",
          ("tests/test_weight_blocks.py::test_a_tuned_llm_is_still_read_as_blocks_and_replies_as_torch_does",)),
    Fault("turn_without_min_speech", "a burst shorter than min_speech_s starts no hands-free turn",
          "es4r/turn_detector.py", "if self._started or self._speech * WINDOW_S < self.config.min_speech_s:",
          "if self._started:",
          ("tests/test_turn_detector.py::test_speech_must_last_min_speech_s_to_start_a_turn",)),
    Fault("token_ids_not_kept", "each text of a turn's prompt is tokenised once", "es4r/modeling/token_ids.py",
          "            if ids is not None:\n", "            if False:\n",
          ("tests/test_pipeline.py::test_a_turn_tokenises_each_text_of_its_history_once",)),
    Fault("barge_in_keeps_a_begun_sentence_whole", "a reply spoken over keeps only the audio heard", "app.py",
          "if text == reply.text and played_to_the_end:", "if text == reply.text or played_to_the_end:",
          ("tests/test_app_unit.py::test_speaking_over_a_reply_keeps_only_what_was_heard_of_it",)),
    Fault("openings_ban_off_by_one", "an earlier opening cannot be completed again", "es4r/modeling/repeats.py",
          "self.follows.setdefault(tuple(ids[:-1]), set()).add(ids[-1])",
          "self.follows.setdefault(tuple(ids[:-2]), set()).add(ids[-1])",
          ("tests/test_reply_bans.py::test_an_earlier_opening_cannot_be_completed_again",)),
    Fault("reply_labels_on_prompt", "reply tuning learns the reply only, not the prompt", "es4r/training/reply_tuning.py",
          "[IGNORE_INDEX] * len(prompt) + target", "prompt + target",
          ("tests/test_reply_tuning.py::test_an_example_is_the_apps_prompt_then_the_reply_and_only_the_reply_is_learnt",)),
)


def _copy_repository(target: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.splitlines()
    for name in files:
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def check(fault: Fault) -> tuple[str, float]:
    with tempfile.TemporaryDirectory(prefix=f"mutant-{fault.name}-") as folder:
        copy = Path(folder)
        _copy_repository(copy)
        target = copy / fault.path
        text = target.read_text()
        if text.count(fault.old) != 1:
            return "stale", 0.0
        target.write_text(text.replace(fault.old, fault.new))
        start = time.perf_counter()
        run = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-n", "0", "-p", "no:cacheprovider", *fault.tests],
                             cwd=copy, capture_output=True, text=True, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
        seconds = time.perf_counter() - start
    if run.returncode == 1:
        return "caught", seconds
    if run.returncode == 0:
        return "SURVIVED", seconds
    return f"error (pytest exit {run.returncode})", seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="faults to plant (default: all)")
    args = parser.parse_args()
    chosen = [f for f in FAULTS if not args.names or f.name in args.names]
    failed = 0
    for fault in chosen:
        result, seconds = check(fault)
        failed += result != "caught"
        print(f"{fault.name:24s} {result:10s} {seconds:6.1f} s  {fault.claim}", flush=True)
    print(f"{len(chosen) - failed} of {len(chosen)} planted faults caught")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
