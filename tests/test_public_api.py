import lfp_mech


def test_every_public_name_resolves():
    for name in lfp_mech.__all__:
        assert getattr(lfp_mech, name) is not None, name


def test_headline_import():
    from lfp_mech import ablate_features, load_model

    assert callable(ablate_features) and callable(load_model)
