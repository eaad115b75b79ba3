"""Audio inputs for Whisper probes: features with time-labelled encoder frames, and real speech clips."""

import pathlib
import wave

import numpy as np

WHISPER_SAMPLING_RATE = 16000  # Hz
WHISPER_FRAME_SECONDS = 0.02  # one encoder frame (two 10 ms mel frames after the stride-2 convolution)
SPEECH_DIR = pathlib.Path("/usr/share/pocketsphinx/test/data")  # Debian's pocketsphinx-testdata (BSD-2)
SPEECH_ATTRIBUTION = (
    "Speech clips from Debian's pocketsphinx-testdata (CMU Sphinx, BSD-2-Clause); the sentences read are "
    "from LibriVox's public-domain recording of Jane Austen's Sense and Sensibility."
)


def frame_labels(num_frames, frame_seconds=WHISPER_FRAME_SECONDS):
    """Each encoder frame's start time: "0.00s", "0.02s", ..."""
    return [f"{i * frame_seconds:.2f}s" for i in range(num_frames)]


def whisper_example(processor, audio, sampling_rate):
    """(input_features [1, mels, 3000], frame_labels) for one clip (processor: has a feature_extractor): the
    1,500 encoder frames labelled by start time."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f"whisper_example takes one mono clip (a 1-D array); got shape {audio.shape}")
    expected = processor.feature_extractor.sampling_rate
    if sampling_rate != expected:
        raise ValueError(f"audio at {sampling_rate} Hz; Whisper's feature extractor wants {expected} Hz: resample first")
    features = processor.feature_extractor(audio, sampling_rate=sampling_rate, return_tensors="pt").input_features
    # The encoder pads every clip to 30 s and halves the mel frames with its stride-2 convolution.
    seconds_per_mel = processor.feature_extractor.hop_length / sampling_rate
    frame_seconds = 2 * seconds_per_mel
    return features, frame_labels(features.shape[-1] // 2, frame_seconds)


def read_wav(path):
    """A 16-bit PCM mono WAV (or headerless .raw at 16 kHz) as float32 samples in [-1, 1] and its sampling rate."""
    path = pathlib.Path(path)
    if path.suffix == ".raw":
        return np.fromfile(path, "<i2").astype(np.float32) / 32768, WHISPER_SAMPLING_RATE
    with wave.open(str(path)) as f:
        if f.getsampwidth() != 2 or f.getnchannels() != 1:
            raise ValueError(f"{path}: expected 16-bit mono PCM, got {8 * f.getsampwidth()}-bit, {f.getnchannels()} channels")
        samples = np.frombuffer(f.readframes(f.getnframes()), "<i2")
        return samples.astype(np.float32) / 32768, f.getframerate()


def speech_clips():
    """Real English speech with known transcripts: [(name, audio, sampling_rate, transcript)] from pocketsphinx-testdata."""
    if not SPEECH_DIR.is_dir():
        raise FileNotFoundError(f"no {SPEECH_DIR}: install Debian's pocketsphinx-testdata (`apt-get install pocketsphinx-testdata`)")
    clips = []
    for line in (SPEECH_DIR / "librivox" / "transcription").read_text().splitlines():
        # "<s> he was not an ill disposed young man </s> (sense_and_sensibility_01_austen_64kb-0880)"
        text, _, name = line.rpartition("(")
        name = name.rstrip(")").strip()
        audio, rate = read_wav(SPEECH_DIR / "librivox" / f"{name}.wav")
        clips.append((name, audio, rate, text.replace("<s>", "").replace("</s>", "").strip()))
    audio, rate = read_wav(SPEECH_DIR / "goforward.raw")
    clips.append(("goforward", audio, rate, "go forward ten meters"))
    return clips
