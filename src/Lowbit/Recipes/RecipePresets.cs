namespace Lowbit.Recipes;

/// <summary>
/// Built-in recipes, by name. Written in the recipe YAML itself, so every preset goes through the
/// same parser and validation as a user's file (`lowbit quantize --recipe NAME`).
/// </summary>
public static class RecipePresets
{
    private static readonly (string Name, string Yaml)[] Table =
    [
        ("gptq-w4g128", """
            calibration: { samples: 128, seq_len: 2048, seed: 42 }
            stages:
              - method: gptq
                format: int4-g128-sym
                options: { act_order: true, damp_percent: 0.01, block_size: 128, true_sequential: true }
            """),
        ("awq-w4g128", """
            calibration: { samples: 128, seq_len: 512, seed: 42 }
            stages:
              - method: awq
                format: int4-g128-asym
                options: { n_grid: 20, clip: true }
            """),
        ("w8a8-smoothquant", """
            calibration: { samples: 128, seq_len: 2048, seed: 42 }
            stages:
              - method: smoothquant
                options: { alpha: 0.5, smooth_down: true }
              - method: rtn
                format: w8a8-int8
            """),
        ("fp8-dynamic", """
            stages:
              - method: rtn
                format: w8a8-fp8
            """),
        ("llm-int8", """
            stages:
              - method: rtn
                format: llm-int8
            """),
        ("nvfp4", """
            stages:
              - method: rtn
                format: nvfp4
            """),
        ("mxfp4", """
            stages:
              - method: rtn
                format: mxfp4
            """),
        ("q4_k_m-imatrix", """
            calibration: { samples: 128, seq_len: 512, seed: 42 }
            stages:
              - method: imatrix
                format: Q4_K_M
            """),
        ("q4_k_m-gptq", """
            calibration: { samples: 128, seq_len: 2048, seed: 42 }
            stages:
              - method: gptq
                format: Q4_K_M
                options: { act_order: false, damp_percent: 0.01, true_sequential: true }
            """),
        ("q3_k_m-gptq", """
            calibration: { samples: 128, seq_len: 2048, seed: 42 }
            stages:
              - method: gptq
                format: Q3_K_M
                options: { act_order: false, damp_percent: 0.01, true_sequential: true }
            """),
    ];

    public static IReadOnlyList<string> Names { get; } = Table.Select(t => t.Name).ToArray();

    public static Recipe? TryGet(string name)
    {
        foreach (var (n, yaml) in Table)
            if (string.Equals(n, name, StringComparison.OrdinalIgnoreCase))
                return Recipe.Parse(yaml, n) with { Name = n };
        return null;
    }

    /// <summary>The YAML text of a preset (for `--recipe NAME --show` style printing and as an example).</summary>
    public static string? Yaml(string name) => Table.FirstOrDefault(t => string.Equals(t.Name, name, StringComparison.OrdinalIgnoreCase)).Yaml;
}
