// ComfyUI frontend extension: give our Save Audio and Load Audio nodes the audio player (and Load
// Audio the upload button) that ComfyUI's own audio nodes get.
//
// The frontend adds its "audioUI" player widget only to its built-in audio nodes, by name. Its
// upload widget ("upload", added by Comfy.UploadAudio for any combo marked audio_upload) looks the
// player up when it is created, and widgets are created in input order: so the player must come
// before "upload". The built-in extension registers first, so by the time this one runs "upload"
// is already in the inputs: the player is inserted right after "audio", ahead of it.
import { app } from "../../scripts/app.js";

const PLAYER_NODES = ["StableAudio_SaveAudio", "StableAudio_LoadAudio"];

function withPlayerAfterAudio(required) {
  const ordered = {};
  let placed = false;
  for (const [name, spec] of Object.entries(required)) {
    if (name === "audioUI") continue;
    if (name === "upload" && !placed) {
      ordered.audioUI = ["AUDIO_UI", {}];
      placed = true;
    }
    ordered[name] = spec;
    if (name === "audio" && !("upload" in required)) {
      ordered.audioUI = ["AUDIO_UI", {}];
      placed = true;
    }
  }
  if (!placed) ordered.audioUI = ["AUDIO_UI", {}];
  return ordered;
}

app.registerExtension({
  name: "StableAudio.AudioPlayer",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (PLAYER_NODES.includes(nodeData.name)) {
      nodeData.input.required = withPlayerAfterAudio(nodeData.input.required);
    }
  },
});
