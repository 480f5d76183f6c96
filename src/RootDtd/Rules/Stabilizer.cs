using TorchSharp;
using static TorchSharp.torch;

namespace RootDtd.Rules;

/// <summary>
/// How a rule divides relevance by a (possibly vanishing) denominator: <c>R / (z + ε·s)</c> with <c>s = +1</c> where
/// <c>z ≥ 0</c> and <c>−1</c> where <c>z &lt; 0</c> (zennit's convention). With <see cref="DropZeros"/> the ratio is set to
/// 0 where <c>z</c> is exactly 0 (the root-inference spec's convention: that relevance is dropped); with ε = 0 exact
/// zeros are always dropped, since 0/0 would be NaN (dead units under LRP-0).
/// </summary>
/// <param name="Epsilon">The shift ε.</param>
/// <param name="DropZeros">Set the ratio to 0 where the denominator is exactly 0.</param>
/// <param name="Signed">True (default): shift away from zero by ε (zennit). False: add +ε whatever the sign (Chefer et al.'s <c>safe_divide</c>).</param>
public sealed record Stabilizer(double Epsilon, bool DropZeros = false, bool Signed = true)
{
    /// <summary>The shift ε: a finite number ≥ 0.</summary>
    public double Epsilon { get; init; } = Epsilon >= 0 && double.IsFinite(Epsilon)
        ? Epsilon
        : throw new ArgumentOutOfRangeException(nameof(Epsilon), Epsilon, "The stabiliser's ε must be a finite number ≥ 0.");

    /// <summary>zennit's default: ε = 1e-6, zeros shifted to +ε.</summary>
    public static Stabilizer Default { get; } = new(1e-6);

    /// <summary>The root-inference spec: ε = 1e-9, exact zeros dropped.</summary>
    public static Stabilizer Spec { get; } = new(1e-9, DropZeros: true);

    /// <summary>Chefer et al.'s <c>safe_divide</c>: <c>a / (b + 1e-9)</c> where <c>b ≠ 0</c>, 0 where <c>b = 0</c>.</summary>
    public static Stabilizer SafeDivide { get; } = new(1e-9, DropZeros: true, Signed: false);

    /// <summary>Returns <c>numerator / stabilised(denominator)</c>.</summary>
    public Tensor Divide(Tensor numerator, Tensor denominator)
    {
        if (!Signed)
        {
            var unsigned = numerator / (denominator + Epsilon);
            return DropZeros ? unsigned.masked_fill_(denominator.eq(0), 0) : unsigned;
        }
        // z + ε·s built in place on one temporary (s·ε = [z ≥ 0]·2ε − ε is exactly ±ε): on large activations every
        // fresh tensor costs more than the arithmetic, so this chain allocates twice instead of six times.
        var shifted = denominator.ge(0).to(denominator.dtype);
        shifted.mul_(2 * Epsilon).sub_(Epsilon).add_(denominator);
        var q = numerator / shifted;
        shifted.Dispose();
        return DropZeros || Epsilon == 0 ? q.masked_fill_(denominator.eq(0), 0) : q;
    }

    /// <inheritdoc />
    public override string ToString() => (Signed ? "" : "+") + (DropZeros ? $"{Epsilon:g3} (zeros dropped)" : $"{Epsilon:g3}");
}
