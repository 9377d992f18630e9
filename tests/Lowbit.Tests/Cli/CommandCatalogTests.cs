using Lowbit.Cli.Commands;

namespace Lowbit.Tests.Cli;

public sealed class CommandCatalogTests
{
    [Fact]
    public void Every_command_has_unique_option_names_and_a_description()
    {
        var names = new HashSet<string>();
        foreach (var cmd in CommandCatalog.All())
        {
            Assert.True(names.Add(cmd.Name), $"command '{cmd.Name}' is registered twice");
            Assert.False(string.IsNullOrWhiteSpace(cmd.Description), cmd.Name);
            var seen = new HashSet<string>();
            foreach (var o in cmd.Options)
                foreach (var alias in o.Aliases.Append(o.Name))
                    Assert.True(seen.Add(alias), $"'{cmd.Name}' declares option '{alias}' twice");
        }
    }
}
