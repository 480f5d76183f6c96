using static TorchSharp.torch;

namespace RootDtd.Imaging;

/// <summary>Moves tensors to the CPU once, at the rendering boundary, and validates their values.</summary>
internal static class TensorData
{
    /// <summary>Copies a floating-point tensor (any device, any float dtype) into a float array; shape is returned as well.</summary>
    public static (float[] Values, long[] Shape) ToCpuFloats(Tensor input, string paramName)
    {
        ArgumentNullException.ThrowIfNull(input, paramName);
        if (!input.is_floating_point())
            throw new ArgumentException($"Expected a floating-point tensor, got {input.dtype}.", paramName);
        using var scope = NewDisposeScope();
        var cpu = input.detach().to(ScalarType.Float32).cpu().contiguous();
        return (cpu.data<float>().ToArray(), input.shape);
    }

    /// <summary>Throws <see cref="ArgumentException"/> naming <paramref name="paramName"/> when a value is NaN or infinite.</summary>
    public static void RequireFinite(ReadOnlySpan<float> values, string paramName)
    {
        for (int i = 0; i < values.Length; i++)
            if (!float.IsFinite(values[i]))
                throw new ArgumentException($"The heatmap contains {(float.IsNaN(values[i]) ? "NaN" : "an infinite value")} at flat index {i}; relevance must be finite.", paramName);
    }
}
