using System.Runtime.CompilerServices;
using TorchSharp;
using static TorchSharp.torch;

namespace RootDtd;

/// <summary>
/// The only place where RootDtd runs the user's own model (the forward check and its diagnosis): one lock per model,
/// and eval semantics for the duration of the call without touching the model's state. Modules in training mode that
/// have no children (BatchNorm, Dropout, …) are switched to eval for the call and back afterwards; containers keep
/// their flag (switching them would make TorchSharp revisit the whole subtree at every level, exponential in the
/// nesting depth). Under the lock no other explanation of the same model can see the switched modes.
/// </summary>
internal sealed class ModelGate : IDisposable
{
    private static readonly ConditionalWeakTable<nn.Module, object> Locks = new();
    private readonly object _lock;
    private readonly List<nn.Module> _switched = new();

    private ModelGate(nn.Module model)
    {
        _lock = Locks.GetValue(model, _ => new object());
        Monitor.Enter(_lock);
        try
        {
            foreach (var module in model.modules())
            {
                if (!module.training || module.children().Any()) continue;
                module.train(false);
                _switched.Add(module);
            }
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>Locks <paramref name="model"/> and gives it eval semantics until disposed.</summary>
    public static ModelGate Enter(nn.Module model) => new(model);

    public void Dispose()
    {
        try
        {
            foreach (var module in _switched) module.train(true);
            _switched.Clear();
        }
        finally
        {
            if (Monitor.IsEntered(_lock)) Monitor.Exit(_lock);
        }
    }
}
