using Lowbit.Formats;
using Lowbit.IO;
using Lowbit.Methods.Calibration;
using Lowbit.Model;
using Lowbit.Recipes;
using Lowbit.Tests.IO;
using Lowbit.Tests.Methods;
using Xunit;

namespace Lowbit.Tests.Recipes;

public sealed class RecipeTests
{
    private static LoadedModel Bundled() => ModelLoader.Open(Path.Combine(RepoPaths.Root, "models", "refmodel-llama-6m"));

    private static string Error(Action a) => Assert.Throws<LowbitException>(a).Message;

    [Fact]
    public void Every_preset_parses_and_resolves_against_the_bundled_model()
    {
        using var model = Bundled();
        foreach (var name in RecipePresets.Names)
        {
            var r = Recipe.Load(name);
            Assert.Equal(name, r.Name);
            var plan = RecipePlanner.Plan(r, model);
            Assert.NotEmpty(plan.Targets);
        }
    }

    [Fact]
    public void Gptq_w4g128_targets_the_block_linears_with_act_order()
    {
        using var model = Bundled();
        var plan = RecipePlanner.Plan(Recipe.Load("gptq-w4g128"), model);
        Assert.Equal(42, plan.Targets.Count);
        Assert.All(plan.Targets, kv =>
        {
            Assert.StartsWith("blk.", kv.Key);
            Assert.Equal("int4-g128-sym", kv.Value.Codec.Name);
            Assert.Equal(QuantMethod.Gptq, kv.Value.Method);
            Assert.True(kv.Value.GptqOptions.ActOrder);
        });
        Assert.False(plan.AllGguf);
        Assert.True(plan.NeedsCalibration);
        Assert.True(plan.TrueSequential);
    }

    [Fact]
    public void Q4_K_M_imatrix_follows_the_llama_cpp_mixture_with_importance()
    {
        using var model = Bundled();
        var plan = RecipePlanner.Plan(Recipe.Load("q4_k_m-imatrix"), model);
        var mixture = GgufMixture.TryGet("Q4_K_M")!.Plan(model.Config, model.Tensors, pure: false, hasImportance: true);
        foreach (var e in mixture.Entries.Where(e => GgufMixture.IsQuantizable(e.Tensor)))
            Assert.Equal(CodecRegistry.Get(e.Type), plan.Targets[e.Tensor.Name].Codec);
        Assert.Equal(CodecRegistry.Get("q6_K"), plan.Targets[TensorNames.Output].Codec);
        Assert.All(plan.Targets.Values, t => Assert.True(t.UseImportance));
        Assert.True(plan.AllGguf);
        Assert.Equal(LlamaFileType.MostlyQ4_K_M, plan.FileType);
    }

    [Fact]
    public void Transform_stages_need_a_registered_implementation()
    {
        using var model = Bundled();
        var plan = RecipePlanner.Plan(Recipe.Load("awq-w4g128"), model);
        Assert.Single(plan.Transforms);
        Assert.Equal(42, plan.Transforms[0].Tensors.Count);
        Assert.Equal("int4-g128-asym", plan.Targets["blk.0.ffn_up.weight"].Codec.Name);
        var sq = RecipePlanner.Plan(Recipe.Load("w8a8-smoothquant"), model);
        Assert.Equal("w8a8-int8", sq.Targets["blk.0.attn_q.weight"].Codec.Name);
        Assert.Contains("no implementation", Error(() => RecipeRunner.CheckTransforms(plan, new Dictionary<string, IRecipeTransform>())));
        // The built-in table has both transforms.
        RecipeRunner.CheckTransforms(plan, RecipeTransforms.BuiltIn());
        RecipeRunner.CheckTransforms(sq, RecipeTransforms.BuiltIn());
    }

    [Fact]
    public void Json_recipes_and_composed_int_formats_are_accepted()
    {
        var r = Recipe.Parse("""
            { "name": "mine", "calibration": { "samples": 8, "seq_len": 64, "seed": 3 },
              "stages": [ { "method": "rtn", "format": "int4", "targets": ["blk\\.0\\..*"], "options": { "group_size": 32, "symmetric": false } } ] }
            """, "mine.json");
        Assert.Equal("mine", r.Name);
        Assert.Equal(8, r.Calibration.Samples);
        using var model = CalibrationTestModels.Tiny();
        var plan = RecipePlanner.Plan(r, model);
        Assert.Equal(7, plan.Targets.Count);
        Assert.All(plan.Targets.Values, t => Assert.Equal("int4-g32-asym", t.Codec.Name));
        Assert.False(plan.NeedsCalibration);
    }

    [Theory]
    [InlineData("stages: [{ method: magic, format: q4_0 }]", "unknown method 'magic'")]
    [InlineData("stages: [{ method: rtn, format: q9_z }]", "unknown format 'q9_z'")]
    [InlineData("stages: [{ method: rtn, format: q4_0, options: { act_order: true } }]", "unknown option 'act_order'")]
    [InlineData("stages: [{ method: gptq, format: int4-g32-sym, options: { damp_percent: 2 } }]", "damp_percent must be in (0, 1)")]
    [InlineData("stages: [{ method: gptq, format: int4-g32-sym, options: { act_order: maybe } }]", "act_order must be true or false")]
    [InlineData("stages: [{ method: rtn, format: int4-g32-sym, options: { group_size: 64 } }]", "already fixes them")]
    [InlineData("stages: [{ method: rtn }]", "'format' is required")]
    [InlineData("stages: [{ method: rtn, format: q4_0, colour: red }]", "unknown key 'colour'")]
    [InlineData("stages: []", "no stages")]
    [InlineData("stages: [{ method: smoothquant }]", "no stage names a format")]
    [InlineData("stages: [{ method: rtn, format: q4_0, targets: ['(('] }]", "not a valid regular expression")]
    [InlineData("stages: [ { method: rtn", "invalid YAML")]
    [InlineData("calibration: { samples: -3 }\nstages: [{ method: rtn, format: q4_0 }]", "calibration.samples must be a positive integer")]
    public void Invalid_recipes_fail_with_a_specific_message(string yaml, string expected) =>
        Assert.Contains(expected, Error(() => Recipe.Parse(yaml, "test.yaml")));

    [Fact]
    public void Patterns_must_match_and_a_tensor_is_quantized_by_one_stage_only()
    {
        using var model = CalibrationTestModels.Tiny();
        Assert.Contains("matches no quantizable tensor", Error(() => RecipePlanner.Plan(
            Recipe.Parse("stages: [{ method: rtn, format: int4-g32-sym, targets: ['blk\\.7\\..*'] }]", "t"), model)));
        Assert.Contains("ignore pattern", Error(() => RecipePlanner.Plan(
            Recipe.Parse("stages: [{ method: rtn, format: int4-g32-sym, ignore: ['lm_head'] }]", "t"), model)));
        Assert.Contains("already quantized by stage 1", Error(() => RecipePlanner.Plan(Recipe.Parse("""
            stages:
              - { method: rtn, format: int4-g32-sym }
              - { method: gptq, format: int8-g32-sym, targets: ['blk\.0\.attn_q\.weight'] }
            """, "t"), model)));
        Assert.Contains("cannot encode rows", Error(() => RecipePlanner.Plan(
            Recipe.Parse("stages: [{ method: rtn, format: q4_K }]", "t"), model)));
        Assert.Contains("neither a recipe preset", Error(() => Recipe.Load("no-such-recipe")));
    }

    [Fact]
    public void Running_a_recipe_equals_running_its_plan_through_the_pipeline()
    {
        using var model = CalibrationTestModels.Tiny();
        var recipe = Recipe.Parse("""
            stages:
              - { method: gptq, format: int4-g32-sym, targets: ['blk\.\d+\.(attn|ffn)_.*'], options: { act_order: true } }
              - { method: imatrix, format: q8_0, targets: ['output\.weight'] }
            """, "t");
        var plan = RecipePlanner.Plan(recipe, model);
        var data = CalibrationTestModels.Data(samples: 4);
        var viaRecipe = RecipeRunner.Run(model, plan, data, RecipeTransforms.BuiltIn(), new CalibrationOptions { Threads = 2 });
        var direct = CalibrationPipeline.Run(model, data, plan.Targets, new CalibrationOptions { Threads = 1 });
        Assert.Equal(15, viaRecipe.Quantized.Count);
        foreach (var (name, t) in direct.Quantized) Assert.True(t.Data.Span.SequenceEqual(viaRecipe.Quantized[name].Data.Span), name);
        Assert.Equal("q8_0", viaRecipe.Model.Get(TensorNames.Output).Codec.Name);
    }

    [Fact]
    public void Registered_transforms_run_before_quantization_and_see_the_final_targets()
    {
        using var model = CalibrationTestModels.Tiny();
        var recipe = Recipe.Parse("""
            stages:
              - { method: smoothquant, targets: ['blk\.0\.attn_q\.weight'], options: { alpha: 0.5 } }
              - { method: rtn, format: int8-g32-sym }
            """, "t");
        var plan = RecipePlanner.Plan(recipe, model);
        Assert.True(plan.NeedsCalibration);
        var doubling = new DoublingTransform();
        var result = RecipeRunner.Run(model, plan, CalibrationTestModels.Data(samples: 2), new Dictionary<string, IRecipeTransform> { ["smoothquant"] = doubling },
            new CalibrationOptions { Threads = 1 });
        Assert.Equal(["blk.0.attn_q.weight"], doubling.Tensors);
        Assert.Equal("int8-g32-sym", doubling.Targets!["blk.0.attn_q.weight"].Codec.Name);
        Assert.Equal("0.5", doubling.Stage!.Options["alpha"]);
        var original = model.Get("blk.0.attn_q.weight").ToFloat();
        var quantized = result.Model.Get("blk.0.attn_q.weight").ToFloat();
        double err = 0, norm = 0;
        for (int i = 0; i < original.Length; i++) { err += Math.Pow(quantized[i] - 2 * original[i], 2); norm += Math.Pow(2 * original[i], 2); }
        Assert.True(err < 1e-3 * norm, $"quantized weights are not the transformed ones (relative error {err / norm})");
    }

    private sealed class DoublingTransform : IRecipeTransform
    {
        public IReadOnlyList<string>? Tensors;
        public IReadOnlyDictionary<string, TensorTarget>? Targets;
        public RecipeStage? Stage;

        public LoadedModel Apply(LoadedModel model, CalibrationData data, RecipeStage stage, IReadOnlyList<string> tensors,
            IReadOnlyDictionary<string, TensorTarget> targets, int threads, CancellationToken cancel)
        {
            (Tensors, Targets, Stage) = (tensors, targets, stage);
            var t = model.Get(tensors[0]);
            var w = t.ToFloat().Select(v => 2 * v).ToArray();
            var bytes = new byte[w.Length * 4];
            Buffer.BlockCopy(w, 0, bytes, 0, bytes.Length);
            return Lowbit.Pipeline.ModelTransforms.WithTensors(model, new Dictionary<string, ModelTensor>
            {
                [t.Name] = new ModelTensor(t.Name, t.Shape, CodecRegistry.Get("f32"), bytes),
            });
        }
    }
}
