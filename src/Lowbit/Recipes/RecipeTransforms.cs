namespace Lowbit.Recipes;

/// <summary>
/// The model-level transform implementations recipes can use, by method name ("awq", "smoothquant").
/// One line per implementation; a recipe whose transform is missing fails before any work with a clear error.
/// </summary>
public static class RecipeTransforms
{
    public static IReadOnlyDictionary<string, IRecipeTransform> BuiltIn() => new Dictionary<string, IRecipeTransform>(StringComparer.Ordinal)
    {
        // --- transform lines: one per method ---
        ["awq"] = new AwqRecipeTransform(),
        ["smoothquant"] = new SmoothQuantRecipeTransform(),
    };
}
