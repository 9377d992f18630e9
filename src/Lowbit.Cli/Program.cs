namespace Lowbit.Cli;

public static class Program
{
    public static int Main(string[] args)
    {
        Console.WriteLine("lowbit: not yet wired");
        return 0;
    }
}
