"""The node pack: its ComfyUI contract, and each node's behaviour on a tiny model built here.

The pack is loaded the way ComfyUI loads custom nodes (importlib, as a package), so the nodes
use the pack's own copy of the core (`<pack>.stable_audio_core`), as they do inside ComfyUI.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
import types
from pathlib import Path

import pytest
import soundfile as sf
import torch

from stable_audio_host.pack import load_pack
from stable_audio_host.runtime import Folders, HostRuntime, Interrupted
from helpers import (BUNDLED_RATIO, BUNDLED_SAMPLE_RATE, RATIO, ROOT, SAMPLE_RATE, bundled_kind_config,
                                make_folders, point_bundled_model_at, write_clip)

CATEGORY = "audio/stable audio"
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN")
OUR_TYPES = ("STABLE_AUDIO_MODEL", "STABLE_AUDIO_TEXT", "STABLE_AUDIO_CONDITIONING", "AUDIO", "LATENT", "FLOAT")
# The training pack (nodes/training) adds its dataset recipe and passes checkpoint paths as STRING.
OUR_TYPES += ("STABLE_AUDIO_DATASET", "STRING")

# Every node key of ComfyUI v0.8.0 (its /object_info plus nodes defined in nodes.py, comfy_extras
# and comfy_api_nodes that need optional dependencies): ours must differ.
COMFYUI_BUILTIN_NODES = {name.strip() for name in """
    APG, AddNoise, AddTextPrefix, AddTextSuffix, AdjustBrightness, AdjustContrast,
    AlignYourStepsScheduler, AudioAdjustVolume, AudioConcat, AudioEncoderEncode, AudioEncoderLoader,
    AudioMerge, AutogrowNamesTestNode, AutogrowPrefixTestNode, BasicGuider, BasicScheduler,
    BatchImagesMasksLatentsNode, BatchImagesNode, BatchLatentsNode, BatchMasksNode,
    BetaSamplingScheduler, ByteDanceFirstLastFrameNode, ByteDanceImageEditNode, ByteDanceImageNode,
    ByteDanceImageReferenceNode, ByteDanceImageToVideoNode, ByteDanceSeedreamNode,
    ByteDanceTextToVideoNode, CFGGuider, CFGNorm, CFGZeroStar, CLIPAttentionMultiply, CLIPLoader,
    CLIPMergeAdd, CLIPMergeSimple, CLIPMergeSubtract, CLIPSave, CLIPSetLastLayer, CLIPTextEncode,
    CLIPTextEncodeControlnet, CLIPTextEncodeFlux, CLIPTextEncodeHiDream, CLIPTextEncodeHunyuanDiT,
    CLIPTextEncodeKandinsky5, CLIPTextEncodeLumina2, CLIPTextEncodePixArtAlpha, CLIPTextEncodeSD3,
    CLIPTextEncodeSDXL, CLIPTextEncodeSDXLRefiner, CLIPVisionEncode, CLIPVisionLoader, Canny,
    CaseConverter, CenterCropImages, CheckpointLoader, CheckpointLoaderSimple, CheckpointSave,
    ChromaRadianceOptions, CombineHooks2, CombineHooks4, CombineHooks8, ComboOptionTestNode,
    ComfySoftSwitchNode, ComfySwitchNode, ConditioningAverage, ConditioningCombine,
    ConditioningConcat, ConditioningSetArea, ConditioningSetAreaPercentage,
    ConditioningSetAreaPercentageVideo, ConditioningSetAreaStrength, ConditioningSetDefaultCombine,
    ConditioningSetMask, ConditioningSetProperties, ConditioningSetPropertiesAndCombine,
    ConditioningSetTimestepRange, ConditioningStableAudio, ConditioningTimestepsRange,
    ConditioningZeroOut, ContextWindowsManual, ControlNetApply, ControlNetApplyAdvanced,
    ControlNetApplySD3, ControlNetInpaintingAliMamaApply, ControlNetLoader,
    ConvertStringToComboNode, CosmosImageToVideoLatent, CosmosPredict2ImageToVideoLatent,
    CreateHookKeyframe, CreateHookKeyframesFromFloats, CreateHookKeyframesInterpolated,
    CreateHookLora, CreateHookLoraModelOnly, CreateHookModelAsLora, CreateHookModelAsLoraModelOnly,
    CreateVideo, CropMask, CustomCombo, DCTestNode, DiffControlNetLoader, DifferentialDiffusion,
    DiffusersLoader, DisableNoise, DualCFGGuider, DualCLIPLoader, EasyCache,
    EmptyAceStepLatentAudio, EmptyAudio, EmptyChromaRadianceLatentImage, EmptyCosmosLatentVideo,
    EmptyFlux2LatentImage, EmptyHunyuanImageLatent, EmptyHunyuanLatentVideo,
    EmptyHunyuanVideo15Latent, EmptyImage, EmptyLTXVLatentVideo, EmptyLatentAudio,
    EmptyLatentHunyuan3Dv2, EmptyLatentImage, EmptyMochiLatentVideo,
    EmptyQwenImageLayeredLatentImage, EmptySD3LatentImage, Epsilon Scaling, ExponentialScheduler,
    ExtendIntermediateSigmas, FeatherMask, FlipSigmas, Flux2MaxImageNode, Flux2ProImageNode,
    Flux2Scheduler, FluxDisableGuidance, FluxGuidance, FluxKontextImageScale,
    FluxKontextMaxImageNode, FluxKontextMultiReferenceLatentMethod, FluxKontextProImageNode,
    FluxProExpandNode, FluxProFillNode, FluxProUltraImageNode, FreSca, FreeU, FreeU_V2,
    GITSScheduler, GLIGENLoader, GLIGENTextBoxApply, GeminiImage2Node, GeminiImageNode,
    GeminiInputFiles, GeminiNode, GenerateTracks, GetImageSize, GetVideoComponents, GrowMask,
    Hunyuan3Dv2Conditioning, Hunyuan3Dv2ConditioningMultiView, HunyuanImageToVideo,
    HunyuanRefinerLatent, HunyuanVideo15ImageToVideo, HunyuanVideo15LatentUpscaleWithModel,
    HunyuanVideo15SuperResolution, HyperTile, HypernetworkLoader, IdeogramV1, IdeogramV2,
    IdeogramV3, ImageAddNoise, ImageBatch, ImageBlend, ImageBlur, ImageColorToMask,
    ImageCompositeMasked, ImageCrop, ImageDeduplication, ImageFlip, ImageFromBatch, ImageGrid,
    ImageInvert, ImageOnlyCheckpointLoader, ImageOnlyCheckpointSave, ImagePadForOutpaint,
    ImageQuantize, ImageRGBToYUV, ImageRotate, ImageScale, ImageScaleBy, ImageScaleToMaxDimension,
    ImageScaleToTotalPixels, ImageSharpen, ImageStitch, ImageToMask, ImageUpscaleWithModel,
    ImageYUVToRGB, InpaintModelConditioning, InstructPixToPixConditioning, InvertBooleanNode,
    InvertMask, JoinImageWithAlpha, KSampler, KSamplerAdvanced, KSamplerSelect,
    Kandinsky5ImageToVideo, KarrasScheduler, KlingCameraControlI2VNode, KlingCameraControlT2VNode,
    KlingCameraControls, KlingDualCharacterVideoEffectNode, KlingImage2VideoNode,
    KlingImageGenerationNode, KlingImageToVideoWithAudio, KlingLipSyncAudioToVideoNode,
    KlingLipSyncTextToVideoNode, KlingMotionControl, KlingOmniProEditVideoNode,
    KlingOmniProFirstLastFrameNode, KlingOmniProImageNode, KlingOmniProImageToVideoNode,
    KlingOmniProTextToVideoNode, KlingOmniProVideoToVideoNode, KlingSingleImageVideoEffectNode,
    KlingStartEndFrameNode, KlingTextToVideoNode, KlingTextToVideoWithAudio, KlingVideoExtendNode,
    KlingVirtualTryOnNode, LTXAVTextEncoderLoader, LTXVAddGuide, LTXVAudioVAEDecode,
    LTXVAudioVAEEncode, LTXVAudioVAELoader, LTXVConcatAVLatent, LTXVConditioning, LTXVCropGuides,
    LTXVEmptyLatentAudio, LTXVImgToVideo, LTXVImgToVideoInplace, LTXVLatentUpsampler,
    LTXVPreprocess, LTXVScheduler, LTXVSeparateAVLatent, LaplaceScheduler, LatentAdd,
    LatentApplyOperation, LatentApplyOperationCFG, LatentBatch, LatentBatchSeedBehavior,
    LatentBlend, LatentComposite, LatentCompositeMasked, LatentConcat, LatentCrop, LatentCut,
    LatentCutToBatch, LatentFlip, LatentFromBatch, LatentInterpolate, LatentMultiply,
    LatentOperationSharpen, LatentOperationTonemapReinhard, LatentRotate, LatentSubtract,
    LatentUpscale, LatentUpscaleBy, LatentUpscaleModelLoader, LazyCache, Load3D, LoadAudio,
    LoadImage, LoadImageDataSetFromFolder, LoadImageMask, LoadImageOutput,
    LoadImageTextDataSetFromFolder, LoadLatent, LoadTrainingDataset, LoadVideo, LoraLoader,
    LoraLoaderModelOnly, LoraModelLoader, LoraSave, LossGraphNode, LotusConditioning,
    LtxvApiImageToVideo, LtxvApiTextToVideo, LumaConceptsNode, LumaImageModifyNode, LumaImageNode,
    LumaImageToVideoNode, LumaReferenceNode, LumaVideoNode, Mahiro, MakeTrainingDataset,
    ManualSigmas, MaskComposite, MaskPreview, MaskToImage, MergeImageLists, MergeTextLists,
    MinimaxHailuoVideoNode, MinimaxImageToVideoNode, MinimaxSubjectToVideoNode,
    MinimaxTextToVideoNode, ModelComputeDtype, ModelMergeAdd, ModelMergeAuraflow, ModelMergeBlocks,
    ModelMergeCosmos14B, ModelMergeCosmos7B, ModelMergeCosmosPredict2_14B,
    ModelMergeCosmosPredict2_2B, ModelMergeFlux1, ModelMergeLTXV, ModelMergeMochiPreview,
    ModelMergeQwenImage, ModelMergeSD1, ModelMergeSD2, ModelMergeSD35_Large, ModelMergeSD3_2B,
    ModelMergeSDXL, ModelMergeSimple, ModelMergeSubtract, ModelMergeWAN2_1, ModelPatchLoader,
    ModelSamplingAuraFlow, ModelSamplingContinuousEDM, ModelSamplingContinuousV,
    ModelSamplingDiscrete, ModelSamplingFlux, ModelSamplingLTXV, ModelSamplingSD3,
    ModelSamplingStableCascade, ModelSave, MoonvalleyImg2VideoNode, MoonvalleyTxt2VideoNode,
    MoonvalleyVideo2VideoNode, Morphology, NormalizeImages, NormalizeVideoLatentStart,
    OpenAIChatConfig, OpenAIChatNode, OpenAIDalle2, OpenAIDalle3, OpenAIGPTImage1, OpenAIInputFiles,
    OpenAIVideoSora2, OptimalStepsScheduler, PairConditioningCombine,
    PairConditioningSetDefaultCombine, PairConditioningSetProperties,
    PairConditioningSetPropertiesAndCombine, PatchModelAddDownscale, PerpNeg, PerpNegGuider,
    PerturbedAttentionGuidance, PhotoMakerEncode, PhotoMakerLoader, PixverseImageToVideoNode,
    PixverseTemplateNode, PixverseTextToVideoNode, PixverseTransitionVideoNode,
    PolyexponentialScheduler, PorterDuffImageComposite, Preview3D, PreviewAny, PreviewAudio,
    PreviewImage, PrimitiveBoolean, PrimitiveFloat, PrimitiveInt, PrimitiveString,
    PrimitiveStringMultiline, QuadrupleCLIPLoader, QwenImageDiffsynthControlnet, RandomCropImages,
    RandomNoise, RebatchImages, RebatchLatents, RecordAudio, RecraftColorRGB, RecraftControls,
    RecraftCreativeUpscaleNode, RecraftCrispUpscaleNode, RecraftImageInpaintingNode,
    RecraftImageToImageNode, RecraftRemoveBackgroundNode, RecraftReplaceBackgroundNode,
    RecraftStyleV3DigitalIllustration, RecraftStyleV3InfiniteStyleLibrary, RecraftStyleV3LogoRaster,
    RecraftStyleV3RealisticImage, RecraftStyleV3VectorIllustrationNode, RecraftTextToImageNode,
    RecraftTextToVectorNode, RecraftVectorizeImageNode, ReferenceLatent, RegexExtract, RegexMatch,
    RegexReplace, RenormCFG, RepeatImageBatch, RepeatLatentBatch, ReplaceText,
    ReplaceVideoLatentFrames, RescaleCFG, ResizeAndPadImage, ResizeImageMaskNode,
    ResizeImagesByLongerEdge, ResizeImagesByShorterEdge, ResolutionBucket, Rodin3D_Detail,
    Rodin3D_Gen2, Rodin3D_Regular, Rodin3D_Sketch, Rodin3D_Smooth, RunwayFirstLastFrameNode,
    RunwayImageToVideoNodeGen3a, RunwayImageToVideoNodeGen4, RunwayTextToImageNode,
    SDTurboScheduler, SD_4XUpscale_Conditioning, SV3D_Conditioning, SVD_img2vid_Conditioning,
    SamplerCustom, SamplerCustomAdvanced, SamplerDPMAdaptative, SamplerDPMPP_2M_SDE,
    SamplerDPMPP_2S_Ancestral, SamplerDPMPP_3M_SDE, SamplerDPMPP_SDE, SamplerER_SDE,
    SamplerEulerAncestral, SamplerEulerAncestralCFGPP, SamplerEulerCFGpp, SamplerLCMUpscale,
    SamplerLMS, SamplerSASolver, SamplerSEEDS2, SamplingPercentToSigma, SaveAnimatedPNG,
    SaveAnimatedWEBP, SaveAudio, SaveAudioMP3, SaveAudioOpus, SaveGLB, SaveImage,
    SaveImageDataSetToFolder, SaveImageTextDataSetToFolder, SaveImageWebsocket, SaveLatent,
    SaveLoRA, SaveSVGNode, SaveTrainingDataset, SaveVideo, SaveWEBM, ScaleROPE,
    SelfAttentionGuidance, SetClipHooks, SetFirstSigma, SetHookKeyframes, SetLatentNoiseMask,
    SetUnionControlNetType, ShuffleDataset, ShuffleImageTextDataset, SkipLayerGuidanceDiT,
    SkipLayerGuidanceDiTSimple, SkipLayerGuidanceSD3, SolidMask, SplitAudioChannels,
    SplitImageWithAlpha, SplitSigmas, SplitSigmasDenoise, StabilityAudioInpaint,
    StabilityAudioToAudio, StabilityStableImageSD_3_5Node, StabilityStableImageUltraNode,
    StabilityTextToAudio, StabilityUpscaleConservativeNode, StabilityUpscaleCreativeNode,
    StabilityUpscaleFastNode, StableCascade_EmptyLatentImage, StableCascade_StageB_Conditioning,
    StableCascade_StageC_VAEEncode, StableCascade_SuperResolutionControlnet,
    StableZero123_Conditioning, StableZero123_Conditioning_Batched, StringCompare,
    StringConcatenate, StringContains, StringLength, StringReplace, StringSubstring, StringTrim,
    StripWhitespace, StyleModelApply, StyleModelLoader, T5TokenizerOptions, TCFG,
    TemporalScoreRescaling, TextEncodeAceStepAudio, TextEncodeHunyuanVideo_ImageToVideo,
    TextEncodeQwenImageEdit, TextEncodeQwenImageEditPlus, TextToLowercase, TextToUppercase,
    ThresholdMask, TomePatchModel, TopazImageEnhance, TopazVideoEnhance, TorchCompileModel,
    TrainLoraNode, TrimAudioDuration, TrimVideoLatent, TripleCLIPLoader, TripoConversionNode,
    TripoImageToModelNode, TripoMultiviewToModelNode, TripoRefineNode, TripoRetargetNode,
    TripoRigNode, TripoTextToModelNode, TripoTextureNode, TruncateText, UNETLoader,
    UNetCrossAttentionMultiply, UNetSelfAttentionMultiply, UNetTemporalAttentionMultiply,
    USOStyleReference, UpscaleModelLoader, VAEDecode, VAEDecodeAudio, VAEDecodeHunyuan3D,
    VAEDecodeTiled, VAEEncode, VAEEncodeAudio, VAEEncodeForInpaint, VAEEncodeTiled, VAELoader,
    VAESave, VPScheduler, Veo3FirstLastFrameNode, Veo3VideoGenerationNode, VeoVideoGenerationNode,
    VideoLinearCFGGuidance, VideoTriangleCFGGuidance, ViduImageToVideoNode, ViduReferenceVideoNode,
    ViduStartEndToVideoNode, ViduTextToVideoNode, VoxelToMesh, VoxelToMeshBasic,
    Wan22FunControlToVideo, Wan22ImageToVideoLatent, WanAnimateToVideo, WanCameraEmbedding,
    WanCameraImageToVideo, WanContextWindowsManual, WanFirstLastFrameToVideo, WanFunControlToVideo,
    WanFunInpaintToVideo, WanHuMoImageToVideo, WanImageToImageApi, WanImageToVideo,
    WanImageToVideoApi, WanMoveConcatTrack, WanMoveTrackToVideo, WanMoveTracksFromCoords,
    WanMoveVisualizeTracks, WanPhantomSubjectToVideo, WanReferenceVideoApi, WanSoundImageToVideo,
    WanSoundImageToVideoExtend, WanTextToImageApi, WanTextToVideoApi, WanTrackToVideo,
    WanVaceToVideo, WebcamCapture, ZImageFunControlnet, unCLIPCheckpointLoader, unCLIPConditioning,
    wanBlockSwap
""".split(",")}


def load_like_comfyui(folder: Path) -> types.ModuleType:
    """ComfyUI v0.8 nodes.load_custom_node: the folder's __init__.py as a package whose module
    name is the folder path (dots replaced); relative imports resolve inside it."""
    name = str(folder).replace(".", "_x_")
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, folder / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def pack():
    return load_pack(ROOT)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return make_folders(tmp_path_factory.mktemp("nodes"))


@pytest.fixture(scope="module")
def runtime(pack, folders):
    host = HostRuntime(Folders(**folders), device="cpu", show_progress=False)
    pack.module.set_host(host)
    return host


@pytest.fixture(scope="module")
def node(pack, runtime):
    """node("T5Encode") -> an instance's bound FUNCTION."""
    def get(key: str):
        cls = pack.classes["StableAudio_" + key]
        return getattr(cls(), cls.FUNCTION)
    return get


@pytest.fixture(scope="module")
def model(node):
    return node("LoadCheckpoint")("tiny.safetensors", "tiny.json", "tiny-t5", "auto", "auto")[0]


def core(pack, module: str):
    """The pack's copy of a core module (what the nodes call)."""
    return importlib.import_module(f"{pack.name}.stable_audio_core.{module}")


# --- the ComfyUI contract -------------------------------------------------------------------

def test_pack_loads_as_comfyui_does_without_importing_comfyui():
    module = load_like_comfyui(ROOT)
    assert module.NODE_CLASS_MAPPINGS and set(module.NODE_DISPLAY_NAME_MAPPINGS) == set(module.NODE_CLASS_MAPPINGS)
    assert not [m for m in sys.modules if m.split(".")[0] in ("comfy", "folder_paths", "comfy_execution")]
    assert "StableAudio_DPMSolverSampler" in module.NODE_CLASS_MAPPINGS


def test_host_loads_the_pack_as_package_custom_nodes_folder(pack):
    assert pack.name == f"custom_nodes.{ROOT.name.replace('.', '_x_')}"
    assert set(pack.classes) == set(load_like_comfyui(ROOT).NODE_CLASS_MAPPINGS)


def _widget_errors(name: str, kind, options: dict) -> list[str]:
    errors = []
    if not options.get("tooltip"):
        errors.append(f"{name}: no tooltip")
    if isinstance(kind, list):
        if options.get("default") is not None and kind and options["default"] not in kind:
            errors.append(f"{name}: default {options['default']!r} not among {kind}")
    elif kind in ("INT", "FLOAT"):
        for key in ("default", "min", "max"):
            if key not in options:
                errors.append(f"{name}: {kind} widget without {key}")
        if all(k in options for k in ("default", "min", "max")) and not options["min"] <= options["default"] <= options["max"]:
            errors.append(f"{name}: default outside [min, max]")
        if kind == "INT" and not all(isinstance(options.get(k, 0), int) for k in ("default", "min", "max")):
            errors.append(f"{name}: INT bounds must be ints")
    elif kind in ("STRING", "BOOLEAN"):
        if "default" not in options:
            errors.append(f"{name}: {kind} widget without default")
    elif kind not in OUR_TYPES:
        errors.append(f"{name}: unexpected input type {kind!r}")
    return errors


def test_every_node_declares_the_v1_contract(pack):
    problems = []
    for key, cls in pack.classes.items():
        spec = cls.INPUT_TYPES()
        if set(spec) - {"required", "optional", "hidden"} or "required" not in spec:
            problems.append(f"{key}: INPUT_TYPES sections {sorted(spec)}")
        for section in ("required", "optional"):
            for name, entry in (spec.get(section) or {}).items():
                if not isinstance(entry, tuple) or not 1 <= len(entry) <= 2 or (len(entry) == 2 and not isinstance(entry[1], dict)):
                    problems.append(f"{key}.{name}: spec must be (type,) or (type, options)")
                    continue
                problems += [f"{key}.{e}" for e in _widget_errors(name, entry[0], entry[1] if len(entry) == 2 else {})]
        if not isinstance(cls.RETURN_TYPES, tuple) or not all(t in OUR_TYPES for t in cls.RETURN_TYPES):
            problems.append(f"{key}: RETURN_TYPES {cls.RETURN_TYPES!r}")
        if len(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES)) != len(cls.RETURN_TYPES):
            problems.append(f"{key}: RETURN_NAMES length")
        if len(getattr(cls, "OUTPUT_TOOLTIPS", cls.RETURN_TYPES)) != len(cls.RETURN_TYPES):
            problems.append(f"{key}: OUTPUT_TOOLTIPS length")
        if not callable(getattr(cls, cls.FUNCTION, None)):
            problems.append(f"{key}: FUNCTION {cls.FUNCTION!r} is not a method")
        if not cls.CATEGORY.startswith(CATEGORY):
            problems.append(f"{key}: CATEGORY {cls.CATEGORY!r}")
        if len(getattr(cls, "DESCRIPTION", "")) < 30:
            problems.append(f"{key}: DESCRIPTION missing or too short")
        if not cls.RETURN_TYPES and getattr(cls, "OUTPUT_NODE", False) is not True:
            problems.append(f"{key}: returns nothing but is not an OUTPUT_NODE")
    assert problems == []


def test_keys_are_prefixed_display_names_natural_and_none_is_a_comfyui_builtin(pack):
    assert len(COMFYUI_BUILTIN_NODES) > 500 and {"SaveAudio", "KSampler", "EmptyLatentAudio"} <= COMFYUI_BUILTIN_NODES
    assert all(key.startswith("StableAudio_") for key in pack.classes)
    assert not set(pack.classes) & COMFYUI_BUILTIN_NODES
    assert pack.display_names["StableAudio_DPMSolverSampler"] == "Stable Audio · DPM-Solver++ Sampler"
    assert all(name.startswith("Stable Audio · ") for name in pack.display_names.values())
    required = {"LoadCheckpoint", "CLAPEncode", "T5Encode", "TimingCondition", "EmptyLatentAudio",
                "DPMSolverSampler", "VAEEncode", "VAEDecode", "TrimSilence", "SaveAudio", "LoadAudio",
                "LatentNoiseMask", "LatentCrop", "LatentConcat", "LatentPad"}
    assert {"StableAudio_" + k for k in required} <= set(pack.classes)


def test_seed_has_comfyuis_control_after_generate_widget(pack):
    seed = pack.classes["StableAudio_DPMSolverSampler"].INPUT_TYPES()["required"]["seed"]
    assert seed[0] == "INT" and seed[1]["control_after_generate"] is True


def test_hooks_use_comfyui_progress_and_interruption_when_no_host_is_set(pack, monkeypatch, runtime):
    calls = []

    class ProgressBar:
        def __init__(self, total):
            calls.append(("bar", total))

        def update_absolute(self, value, total=None):
            calls.append(("update", value, total))

    utils = types.ModuleType("comfy.utils")
    utils.ProgressBar = ProgressBar
    management = types.ModuleType("comfy.model_management")
    management.throw_exception_if_processing_interrupted = lambda: calls.append(("check",))
    monkeypatch.setitem(sys.modules, "comfy", types.ModuleType("comfy"))
    monkeypatch.setitem(sys.modules, "comfy.utils", utils)
    monkeypatch.setitem(sys.modules, "comfy.model_management", management)
    hooks = importlib.import_module(pack.name + ".nodes.hooks")
    hooks.set_host(None)
    try:
        progress = hooks.Progress(3)
        progress.update(1)
    finally:
        hooks.set_host(runtime)
    assert calls == [("bar", 3), ("update", 1, 3), ("check",)]


# --- the bundled default model -------------------------------------------------------------

BUNDLED_NAME = "bundled/default-small"


def test_load_checkpoint_offers_the_bundled_model_first_and_by_default(pack, runtime):
    choices, options = pack.classes["StableAudio_LoadCheckpoint"].INPUT_TYPES()["required"]["ckpt_name"]
    assert choices[0] == options["default"] == BUNDLED_NAME
    assert "tiny.safetensors" in choices  # the models folder's checkpoints follow it


def test_load_checkpoint_loads_the_bundled_model_with_its_config_and_clap(pack, node, bundled_stand_in):
    model = node("LoadCheckpoint")(BUNDLED_NAME, "auto", "none", "cpu", "auto")[0]

    assert (model.sample_rate, model.downsampling_ratio, model.io_channels) == (BUNDLED_SAMPLE_RATE, BUNDLED_RATIO, 32)
    # text_encoder 'none' still gives the CLAP conditioner its encoder: the bundled clap/ folder
    text = node("CLAPEncode")(model, "warm piano chords, 90 BPM", "")[0]
    assert text["kind"] == "CLAP" and text["positive"] and text["negative"] is None
    defaults = core(pack, "pipeline").defaults_for(model)
    assert {k: defaults[k] for k in ("steps", "cfg_scale", "sampler")} == bundled_kind_config()["sampling_defaults"]


def test_load_checkpoint_offers_the_cpu_precision_paths_as_dtype_choices(pack, node, bundled_stand_in):
    choices, options = pack.classes["StableAudio_LoadCheckpoint"].INPUT_TYPES()["required"]["dtype"]
    assert choices[:4] == ["auto", "float32", "float16", "bfloat16"] and options["default"] == "auto"  # old workflows
    assert {"float32 + int8 linears", "float32 + bfloat16 matmuls", "cpu-adaptive"} <= set(choices)

    int8 = node("LoadCheckpoint")(BUNDLED_NAME, "auto", "none", "cpu", "float32 + int8 linears")[0]
    plain = node("LoadCheckpoint")(BUNDLED_NAME, "auto", "none", "cpu", "auto")[0]
    assert (int8.precision, int8.dtype, plain.precision) == ("int8", torch.float32, "fp32")


def test_load_checkpoint_names_the_missing_bundled_files(pack, node, tmp_path, monkeypatch):
    point_bundled_model_at(tmp_path, monkeypatch)  # an empty folder: the weights are not installed

    with pytest.raises(core(pack, "errors").InputError, match="bundled default model is incomplete") as caught:
        node("LoadCheckpoint")(BUNDLED_NAME, "auto", "none", "cpu", "auto")

    assert all(name in str(caught.value) for name in ("model_config.json", "model.safetensors", "clap"))


# --- conditioning and sampling --------------------------------------------------------------

def _condition(node, model, seconds_total=1.0, positive="rain on a roof", negative="noise"):
    text = node("T5Encode")(model, positive, negative)[0]
    return node("TimingCondition")(model, 0.0, seconds_total, text)


SAMPLER_ARGS = dict(steps=3, cfg=6.0, sampler="dpmpp-2m", schedule="polyexponential", sigma_min=0.3,
                    sigma_max=500.0, denoise=1.0, cfg_rescale=0.0)


def test_text_timing_and_sampler_nodes_equal_one_core_generate_call(pack, node, model):
    conditioning, seconds_total = _condition(node, model, seconds_total=1.0)
    latent = node("EmptyLatentAudio")(model, 1.5, 1)[0]

    sampled = node("DPMSolverSampler")(model, conditioning, latent, 7, **SAMPLER_ARGS)[0]

    reference = core(pack, "pipeline").generate(
        model, "rain on a roof", negative_prompt="noise", seconds_total=1.0, steps=3, cfg_scale=6.0,
        sampler="dpmpp-2m", seed=7, sample_size=latent["samples"].shape[-1] * RATIO, decode=False)
    assert seconds_total == 1.0 and sampled["type"] == "audio"
    # Same seed, same operations in the same order: bit-identical.
    assert torch.equal(sampled["samples"], reference.latents)


def test_seconds_total_longer_than_the_latent_names_the_nodes_to_change(node, model):
    # audio to audio with a clip shorter than Timing's seconds_total: the latent is the window
    conditioning, _ = _condition(node, model, seconds_total=1.0)
    latent = node("EmptyLatentAudio")(model, 0.5, 1)[0]
    with pytest.raises(Exception, match="longer than the generation window of 0.5. s; the window is "
                                        "the latent's length .* lower Timing Condition's seconds_total"):
        node("DPMSolverSampler")(model, conditioning, latent, 7, **SAMPLER_ARGS)


def test_sampler_cfg_rescale_defaults_to_the_models_own_rescale(pack, node, model, monkeypatch):
    # -1 (the widget default) hands None to the core, which applies the backbone's default
    # (paper U-Net 0.4, DiT 0); a value >= 0 is passed through.
    cls = pack.classes["StableAudio_DPMSolverSampler"]
    options = cls.INPUT_TYPES()["required"]["cfg_rescale"][1]
    assert options["default"] == options["min"] == -1.0 and "model's default" in options["tooltip"]
    module = sys.modules[cls.__module__]
    passed, real_resolve = [], module.resolve_sampling

    def spy(*args, **kwargs):
        passed.append(kwargs["cfg_rescale"])
        return real_resolve(*args, **kwargs)

    monkeypatch.setattr(module, "resolve_sampling", spy)
    conditioning, _ = _condition(node, model)
    latent = node("EmptyLatentAudio")(model, 1.0, 1)[0]
    for value in (-1.0, 0.0, 0.7):
        node("DPMSolverSampler")(model, conditioning, latent, 1,
                                 **{**SAMPLER_ARGS, "steps": 1, "cfg_rescale": value})
    assert passed == [None, 0.0, 0.7]


def test_empty_latent_length_follows_the_models_rate_and_ratio(node, model):
    latent = node("EmptyLatentAudio")(model, 1.0, 2)[0]
    assert latent["type"] == "audio"
    assert tuple(latent["samples"].shape) == (2, model.io_channels, -(-SAMPLE_RATE // RATIO))
    assert latent["samples"].abs().sum() == 0


def test_denoise_starts_audio_to_audio_at_the_matching_noise_level(pack, node, model):
    pipeline = core(pack, "pipeline")
    levels = [pipeline.denoise_to_noise_level(model, d, 0.3, 500.0) for d in (0.25, 0.5, 0.75, 1.0)]
    assert levels == sorted(levels) and levels[-1] == pytest.approx(500.0)
    assert levels[1] == pytest.approx((0.3 * 500.0) ** 0.5)  # log-linear: the geometric mean
    conditioning, _ = _condition(node, model)
    source = node("VAEEncode")(model, {"waveform": torch.randn(1, 2, 2000) * 0.3, "sample_rate": SAMPLE_RATE})[0]

    out = node("DPMSolverSampler")(model, conditioning, source, 3, **{**SAMPLER_ARGS, "denoise": 0.5})[0]

    reference = pipeline.generate(
        model, inputs=conditioning["positive"], negative_inputs=conditioning["negative"], seconds_total=1.0,
        steps=3, cfg_scale=6.0, sampler="dpmpp-2m", seed=3, sample_size=source["samples"].shape[-1] * RATIO,
        init_latents=source["samples"], init_noise_level=levels[1], decode=False)
    assert torch.equal(out["samples"], reference.latents)


def test_sampler_reports_progress_and_stops_when_interrupted(node, model, runtime):
    conditioning, _ = _condition(node, model)
    latent = node("EmptyLatentAudio")(model, 1.0, 1)[0]
    runtime.progress_log.clear()
    node("DPMSolverSampler")(model, conditioning, latent, 1, **SAMPLER_ARGS)
    assert [entry[1:] for entry in runtime.progress_log] == [(1, 3), (2, 3), (3, 3)]

    runtime.interrupt()
    with pytest.raises(Interrupted):
        node("DPMSolverSampler")(model, conditioning, latent, 1, **SAMPLER_ARGS)


def test_clap_encode_on_a_t5_model_names_the_right_node(node, model):
    with pytest.raises(ValueError, match="no CLAP text conditioner.*t5"):
        node("CLAPEncode")(model, "rain", "")


def test_timing_condition_without_text_asks_for_a_text_encoder(node, model):
    with pytest.raises(ValueError, match="connect a T5 Encode"):
        node("TimingCondition")(model, 0.0, 1.0)


def test_sampler_pads_a_latent_off_the_unet_multiple_and_crops_back(node, bundled_stand_in):
    model = node("LoadCheckpoint")(BUNDLED_NAME, "auto", "none", "cpu", "auto")[0]
    text = node("CLAPEncode")(model, "warm piano chords", "")[0]
    conditioning, _ = node("TimingCondition")(model, 0.0, 1.0, text)
    source = {"samples": torch.randn(1, model.io_channels, 45), "type": "audio"}  # the U-Net takes multiples of 4
    masked = node("LatentNoiseMask")(model, source, 0.5, 0.8, "regenerate range")[0]

    out = node("DPMSolverSampler")(model, conditioning, masked, 1, **{**SAMPLER_ARGS, "steps": 1})[0]

    assert out["samples"].shape == source["samples"].shape and torch.equal(out["noise_mask"], masked["noise_mask"])
    kept = masked["noise_mask"][0, 0] == 0
    assert torch.equal(out["samples"][..., kept], source["samples"][..., kept])


def test_a_latent_with_other_channels_is_rejected_with_the_reason(node, model):
    conditioning, _ = _condition(node, model)
    image_like = {"samples": torch.zeros(1, 64, 20), "type": "audio"}
    with pytest.raises(ValueError, match="64 channels but the model's latents have 16"):
        node("DPMSolverSampler")(model, conditioning, image_like, 1, **SAMPLER_ARGS)


# --- audio in and out -----------------------------------------------------------------------

def test_load_audio_resamples_to_the_model_rate_and_makes_mono_stereo(node, model, folders):
    audio = node("LoadAudio")("clip.wav", model)[0]
    assert audio["sample_rate"] == SAMPLE_RATE
    assert tuple(audio["waveform"].shape) == (1, 2, 3 * SAMPLE_RATE)
    assert torch.equal(audio["waveform"][0, 0], audio["waveform"][0, 1])


def test_load_audio_rejects_names_outside_the_input_folder(pack):
    cls = pack.classes["StableAudio_LoadAudio"]
    assert cls.VALIDATE_INPUTS("clip.wav") is True
    assert "not a name inside" in cls.VALIDATE_INPUTS("../models/checkpoints/tiny.json")


def test_vae_encode_takes_any_rate_and_pads_to_whole_latent_frames(node, model):
    audio = {"waveform": torch.randn(1, 1, 4410) * 0.1, "sample_rate": 44100}  # 0.1 s mono
    latent = node("VAEEncode")(model, audio)[0]
    assert tuple(latent["samples"].shape) == (1, model.io_channels, -(-200 // RATIO))


def test_vae_decode_in_chunks_matches_decoding_at_once(node, model):
    latent = {"samples": torch.randn(1, model.io_channels, 150), "type": "audio"}
    whole = node("VAEDecode")(model, latent, 0, 0)[0]["waveform"]
    chunked = node("VAEDecode")(model, latent, 96, 48)[0]["waveform"]
    assert whole.shape == chunked.shape == (1, 2, 150 * RATIO)
    # overlap/2 = 24 latents covers the tiny decoder's receptive field (about 20 latents: its
    # strides are small, so its dilated convolutions reach far in latent frames): equal up to
    # float summation order.
    assert (whole - chunked).abs().max().item() < 1e-5


def test_trim_silence_cuts_at_seconds_total_or_at_the_detected_end(node):
    waveform = torch.zeros(1, 2, 2000)
    waveform[..., :1200] = 0.5
    audio = {"waveform": waveform, "sample_rate": 2000}
    assert node("TrimSilence")(audio, 0.25, -60.0)[0]["waveform"].shape[-1] == 500
    assert node("TrimSilence")(audio, 0.0, -60.0)[0]["waveform"].shape[-1] == 1200


def _save(node, fmt, prefix="audio/test", workflow=None):
    audio = {"waveform": torch.rand(2, 2, 1000) * 0.2, "sample_rate": 2000}
    return node("SaveAudio")(audio, prefix, fmt, prompt={"1": {"class_type": "X", "inputs": {}}},
                             extra_pnginfo={"workflow": workflow or {"nodes": []}})["ui"]["audio"]


def test_save_audio_flac_carries_prompt_and_workflow_like_comfyuis_saveaudio(pack, node, folders):
    saved = _save(node, "flac", workflow={"nodes": [{"id": 1}]})
    assert [s["subfolder"] for s in saved] == ["audio", "audio"] and saved[0]["type"] == "output"
    path = folders["output"] / "audio" / saved[0]["filename"]
    assert sf.info(str(path)).frames == 1000 and sf.info(str(path)).samplerate == 2000
    tags = importlib.import_module(pack.name + ".stable_audio_core.audio.tags").read_tags(path)
    assert json.loads(tags["workflow"]) == {"nodes": [{"id": 1}]}
    assert json.loads(tags["prompt"]) == {"1": {"class_type": "X", "inputs": {}}}


@pytest.mark.parametrize("fmt", ["ogg", "opus", "mp3"])
def test_save_audio_lossy_formats_embed_the_workflow_and_list_every_batch_item(pack, node, folders, fmt):
    saved = _save(node, fmt, prefix=f"batch/{fmt}", workflow={"nodes": [{"id": 7}]})
    # ComfyUI's convention for a batch: one {"filename", "subfolder", "type"} per item, in order
    assert [s["filename"] for s in saved] == [f"{fmt}_00001_.{fmt}", f"{fmt}_00002_.{fmt}"]
    read_tags = importlib.import_module(pack.name + ".stable_audio_core.audio.tags").read_tags
    for item in saved:
        path = folders["output"] / "batch" / item["filename"]
        info = sf.info(str(path))
        rate = {"ogg": 2000, "opus": 8000, "mp3": 8000}[fmt]   # Opus and MP3 lack 2 kHz: the next rate up
        assert info.samplerate == rate and info.frames == rate // 2
        assert json.loads(read_tags(path)["workflow"]) == {"nodes": [{"id": 7}]}
    assert not list((folders["output"] / "batch").glob("*.json"))


def test_save_audio_other_formats_get_a_sidecar_and_new_names(node, folders):
    first = _save(node, "wav", prefix="side/car")
    second = _save(node, "wav", prefix="side/car")
    names = [s["filename"] for s in first + second]
    assert names == ["car_00001_.wav", "car_00002_.wav", "car_00003_.wav", "car_00004_.wav"]
    sidecar = json.loads((folders["output"] / "side" / "car_00001_.wav.json").read_text())
    # what reproduces the file (the API prompt), not a copy of the UI layout per item
    assert sidecar == {"prompt": {"1": {"class_type": "X", "inputs": {}}}}


def test_save_audio_prefix_cannot_leave_the_output_folder(node, folders):
    saved = _save(node, "wav", prefix="../../etc/../x:y/evil")
    path = (folders["output"] / saved[0]["subfolder"] / saved[0]["filename"]).resolve()
    assert folders["output"].resolve() in path.parents and path.is_file()
    assert not [p for p in folders["output"].parent.glob("*.wav")]


# --- latent tools ---------------------------------------------------------------------------

def _latent(frames=250, batch=1):
    return {"samples": torch.randn(batch, 16, frames), "type": "audio"}


def test_noise_mask_marks_the_time_range_in_latent_frames(node, model):
    out = node("LatentNoiseMask")(model, _latent(), 0.4, 1.2, "regenerate range")[0]
    mask = out["noise_mask"][0, 0]
    frames_per_second = SAMPLE_RATE / RATIO
    assert mask.shape == (250,) and mask.sum() == 0.8 * frames_per_second
    assert mask[50:150].eq(1).all()


def test_chained_noise_masks_add_up_and_keep_mode_inverts(node, model):
    first = node("LatentNoiseMask")(model, _latent(), 0.0, 0.2, "regenerate range")[0]
    both = node("LatentNoiseMask")(model, first, 1.0, 1.2, "regenerate range")[0]
    assert both["noise_mask"].sum() == 50
    kept = node("LatentNoiseMask")(model, _latent(), 0.0, 0.2, "keep range")[0]
    assert kept["noise_mask"].sum() == 250 - 25


def test_latent_pad_regenerates_only_the_padding(node, model):
    source = _latent(100)
    padded = node("LatentPad")(model, source, 0.4, "end")[0]
    assert padded["samples"].shape[-1] == 150
    assert torch.equal(padded["samples"][..., :100], source["samples"])
    assert padded["noise_mask"][0, 0, :100].eq(0).all() and padded["noise_mask"][0, 0, 100:].eq(1).all()
    before = node("LatentPad")(model, source, 0.4, "start")[0]
    assert before["noise_mask"][0, 0, :50].eq(1).all() and torch.equal(before["samples"][..., 50:], source["samples"])


def test_latent_crop_and_concat_are_inverse(node, model):
    source = node("LatentNoiseMask")(model, _latent(200), 0.2, 0.4, "regenerate range")[0]
    head = node("LatentCrop")(model, source, 0.0, 0.8)[0]
    tail = node("LatentCrop")(model, source, 0.8, 0.0)[0]
    joined = node("LatentConcat")(head, tail)[0]
    assert head["samples"].shape[-1] == 100 and tail["samples"].shape[-1] == 100
    assert torch.equal(joined["samples"], source["samples"]) and torch.equal(joined["noise_mask"], source["noise_mask"])


def test_empty_time_range_is_refused(node, model):
    with pytest.raises(ValueError, match="covers no frame"):
        node("LatentCrop")(model, _latent(100), 2.0, 3.0)


# --- lengths follow the model (window, defaults) and come back exact ---------------------------

TINY_WINDOW_FRAMES = 256  # tiny model: sample_size RATIO * 256, 2.048 s


def test_duration_widgets_default_to_the_models_window(pack, node, model):
    latent_seconds = pack.classes["StableAudio_EmptyLatentAudio"].INPUT_TYPES()["required"]["seconds"][1]
    timing_seconds = pack.classes["StableAudio_TimingCondition"].INPUT_TYPES()["required"]["seconds_total"][1]
    assert latent_seconds["default"] == timing_seconds["default"] == 0.0

    latent = node("EmptyLatentAudio")(model, 0.0, 1)[0]
    _, seconds_total = _condition(node, model, seconds_total=0.0)

    assert latent["samples"].shape[-1] == TINY_WINDOW_FRAMES
    assert seconds_total == TINY_WINDOW_FRAMES * RATIO / SAMPLE_RATE


def test_durations_beyond_the_window_log_a_warning(node, model, caplog):
    node("EmptyLatentAudio")(model, 3.0, 1)
    _condition(node, model, seconds_total=3.0)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 2 and all("window of 2.05 s" in w for w in warnings)


def test_sampler_steps_and_cfg_default_to_the_models_own(pack, node, model, monkeypatch):
    cls = pack.classes["StableAudio_DPMSolverSampler"]
    required = cls.INPUT_TYPES()["required"]
    assert (required["steps"][1]["default"], required["cfg"][1]["default"], required["sampler"][1]["default"]) \
        == (0, -1.0, "default")
    module = sys.modules[cls.__module__]
    passed, real_resolve = [], module.resolve_sampling

    def spy(*args, **kwargs):
        passed.append((kwargs["steps"], kwargs["cfg_scale"]))
        return real_resolve(*args, **kwargs)

    monkeypatch.setattr(module, "resolve_sampling", spy)
    monkeypatch.setattr(module, "sample_latents", lambda *a, **k: (torch.zeros(1, model.io_channels, 10), None))
    conditioning, _ = _condition(node, model)
    latent = node("EmptyLatentAudio")(model, 1.0, 1)[0]
    node("DPMSolverSampler")(model, conditioning, latent, 1, **{**SAMPLER_ARGS, "steps": 0, "cfg": -1.0})
    node("DPMSolverSampler")(model, conditioning, latent, 1, **{**SAMPLER_ARGS, "steps": 3, "cfg": 2.0})
    assert passed == [(None, None), (3, 2.0)]  # None: the core takes the model's default


def test_vae_decode_returns_exactly_the_latents_audio_length(node, model):
    latent = node("EmptyLatentAudio")(model, 0.5, 1)[0]   # 62.5 frames -> 63 whole frames
    assert latent["samples"].shape[-1] == 63
    assert node("VAEDecode")(model, latent, 0, 0)[0]["waveform"].shape[-1] == 0.5 * SAMPLE_RATE

    clip = {"waveform": torch.randn(1, 2, 4410) * 0.1, "sample_rate": 44100}  # 0.1 s: 200 samples here
    encoded = node("VAEEncode")(model, clip)[0]
    assert node("VAEDecode")(model, encoded, 0, 0)[0]["waveform"].shape[-1] == 200


def test_latent_pad_outputs_clip_plus_extension_for_timing(node, model):
    clip = node("EmptyLatentAudio")(model, 0.5, 1)[0]   # 1000 samples in 63 frames

    padded, seconds_total = node("LatentPad")(model, clip, 0.4, "end")

    assert seconds_total == 0.9
    assert padded["samples"].shape[-1] == 63 + 50
    assert node("VAEDecode")(model, padded, 0, 0)[0]["waveform"].shape[-1] == 0.9 * SAMPLE_RATE


def test_latent_pad_clamps_at_the_models_window_and_says_so(node, model, caplog):
    padded, seconds_total = node("LatentPad")(model, _latent(100), 5.0, "end")

    assert padded["samples"].shape[-1] == TINY_WINDOW_FRAMES
    assert seconds_total == TINY_WINDOW_FRAMES * RATIO / SAMPLE_RATE
    assert any("clamped to the model's 2.05 s window" in r.getMessage() for r in caplog.records)
    with pytest.raises(ValueError, match="already fills this model's 2.05 s window"):
        node("LatentPad")(model, _latent(TINY_WINDOW_FRAMES), 1.0, "end")


def test_load_audio_offers_comfyuis_upload_button_and_player(pack):
    options = pack.classes["StableAudio_LoadAudio"].INPUT_TYPES()["required"]["audio"][1]
    assert options.get("audio_upload") is True  # the frontend then adds its upload button
    # The button needs the player widget, which only our extension adds to our nodes, ahead of it.
    script = (ROOT / pack.module.WEB_DIRECTORY / "audio_player.js").read_text()
    assert '"StableAudio_LoadAudio"' in script and '"StableAudio_SaveAudio"' in script
    assert 'name === "upload"' in script
