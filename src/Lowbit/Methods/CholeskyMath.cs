namespace Lowbit.Methods;

/// <summary>Dense symmetric positive-definite helpers for GPTQ (double precision, row-major).</summary>
public static class CholeskyMath
{
    /// <summary>Lower Cholesky factor L with A = L Lᵀ. Throws when A is not positive definite.</summary>
    public static double[] Cholesky(double[] a, int n)
    {
        var l = new double[(long)n * n];
        for (int j = 0; j < n; j++)
        {
            double s = a[(long)j * n + j];
            long jo = (long)j * n;
            for (int k = 0; k < j; k++) s -= l[jo + k] * l[jo + k];
            if (!(s > 0)) throw new LowbitException($"GPTQ: Hessian is not positive definite at column {j}; increase --damp");
            double d = Math.Sqrt(s);
            l[jo + j] = d;
            Parallel.For(j + 1, n, i =>
            {
                long io = (long)i * n;
                double t = a[io + j];
                for (int k = 0; k < j; k++) t -= l[io + k] * l[jo + k];
                l[io + j] = t / d;
            });
        }
        return l;
    }

    /// <summary>
    /// Upper Cholesky factor U of A⁻¹ (A⁻¹ = Uᵀ U), as GPTQ uses: cholesky(cholesky_inverse(cholesky(A)), upper=True).
    /// </summary>
    public static double[] InverseUpperCholesky(double[] a, int n)
    {
        var l = Cholesky(a, n);
        // Linv = L⁻¹ (lower triangular), by forward substitution column by column.
        var linv = new double[(long)n * n];
        Parallel.For(0, n, c =>
        {
            linv[(long)c * n + c] = 1.0 / l[(long)c * n + c];
            for (int i = c + 1; i < n; i++)
            {
                double s = 0;
                long io = (long)i * n;
                for (int k = c; k < i; k++) s -= l[io + k] * linv[(long)k * n + c];
                linv[io + c] = s / l[io + i];
            }
        });
        // A⁻¹ = Linvᵀ Linv.
        var inv = new double[(long)n * n];
        Parallel.For(0, n, i =>
        {
            for (int j = i; j < n; j++)
            {
                double s = 0;
                int k0 = Math.Max(i, j);
                for (int k = k0; k < n; k++) s += linv[(long)k * n + i] * linv[(long)k * n + j];
                inv[(long)i * n + j] = s;
                inv[(long)j * n + i] = s;
            }
        });
        // Upper factor of A⁻¹: U = Lᵀ of cholesky(A⁻¹).
        var l2 = Cholesky(inv, n);
        var u = new double[(long)n * n];
        for (int i = 0; i < n; i++)
            for (int j = i; j < n; j++) u[(long)i * n + j] = l2[(long)j * n + i];
        return u;
    }
}
