// The microphone as PCM16 mono 24 kHz, 40 ms (960-sample) frames posted to the page.
// The page runs its AudioContext at 24 kHz when the browser lets it (Chrome
// resamples the microphone itself); otherwise the context runs at the device
// rate and this processor resamples: linear interpolation after a moving
// average as wide as the rate ratio (a rough low-pass against aliasing).
class Pcm16Capture extends AudioWorkletProcessor {
  constructor() {
    super();
    this.targetRate = 24000;
    this.frameSamples = 960;
    this.ratio = sampleRate / this.targetRate;
    this.width = Math.max(1, Math.round(this.ratio));
    this.frame = new Int16Array(this.frameSamples);
    this.filled = 0;
    this.pending = [];
    this.position = 0;
    this.history = [];
  }

  process(inputs, outputs) {
    const input = inputs[0];
    if (input && input.length) {
      const mono = this.mix(input);
      if (this.ratio === 1) {
        for (let i = 0; i < mono.length; i++) this.push(mono[i]);
      } else {
        this.resample(mono);
      }
    }
    return true;
  }

  mix(channels) {
    if (channels.length === 1) return channels[0];
    const out = new Float32Array(channels[0].length);
    for (const channel of channels) for (let i = 0; i < out.length; i++) out[i] += channel[i] / channels.length;
    return out;
  }

  resample(block) {
    for (let i = 0; i < block.length; i++) {
      this.history.push(block[i]);
      if (this.history.length > this.width) this.history.shift();
      let sum = 0;
      for (const value of this.history) sum += value;
      this.pending.push(sum / this.history.length);
    }
    while (this.position + 1 < this.pending.length) {
      const index = Math.floor(this.position);
      const fraction = this.position - index;
      this.push(this.pending[index] * (1 - fraction) + this.pending[index + 1] * fraction);
      this.position += this.ratio;
    }
    const used = Math.floor(this.position);
    this.pending = this.pending.slice(used);
    this.position -= used;
  }

  push(sample) {
    const clamped = Math.max(-1, Math.min(1, sample));
    this.frame[this.filled++] = clamped < 0 ? clamped * 32768 : clamped * 32767;
    if (this.filled === this.frameSamples) {
      this.port.postMessage(this.frame.buffer, [this.frame.buffer]);
      this.frame = new Int16Array(this.frameSamples);
      this.filled = 0;
    }
  }
}

registerProcessor("pcm16-capture", Pcm16Capture);
