// AudioWorklet for the page's opt-in recording: hands the main thread both sides of the
// conversation (channel 0: the mic, channel 1: the reply), sample-aligned, in blocks.
"use strict";

const BLOCK = 4096; // frames per message: ~85 ms at 48 kHz

class TwoSides extends AudioWorkletProcessor {
  constructor() {
    super();
    this.fresh();
  }

  fresh() {
    this.left = new Float32Array(BLOCK);
    this.right = new Float32Array(BLOCK);
    this.n = 0;
  }

  process(inputs) {
    const input = inputs[0];
    if (!input || !input.length) return true;
    const l = input[0], r = input[1];  // no second channel: the reply is silent
    for (let i = 0; i < l.length; i++) {
      this.left[this.n] = l[i];
      this.right[this.n] = r ? r[i] : 0;
      if (++this.n === BLOCK) {
        this.port.postMessage({ left: this.left, right: this.right, rate: sampleRate }, [this.left.buffer, this.right.buffer]);
        this.fresh();
      }
    }
    return true;
  }
}

registerProcessor("two-sides", TwoSides);
