"""Human motion: HumanML3D features, the MDM backbone, skeleton rendering and SMPL export."""
