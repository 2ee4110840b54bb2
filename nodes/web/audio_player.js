// ComfyUI frontend extension: give our Save Audio node the audio player ComfyUI's own audio
// nodes get. The frontend adds its "audioUI" widget only to its built-in audio nodes by name, and
// its handler for executed nodes expects that widget wherever an "audio" output is shown.
import { app } from "../../scripts/app.js";

const PLAYER_NODES = ["StableAudio_SaveAudio"];

app.registerExtension({
  name: "StableAudio.AudioPlayer",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (PLAYER_NODES.includes(nodeData.name)) {
      nodeData.input.required.audioUI = ["AUDIO_UI", {}];
    }
  },
});
