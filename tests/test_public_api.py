import lfp_mech


def test_every_public_name_resolves():
    for name in lfp_mech.__all__:
        obj = getattr(lfp_mech, name)
        # each name is defined inside the package (or is a module/constant of it), not a stray
        module = getattr(obj, "__module__", None) or getattr(obj, "__name__", "lfp_mech")
        assert obj is not None and str(module).startswith("lfp_mech"), (name, module)


def test_headline_import():
    from lfp_mech import ablate_features, load_model

    assert callable(ablate_features) and callable(load_model)
