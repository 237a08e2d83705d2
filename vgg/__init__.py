"""A reference reproduction of Simonyan & Zisserman (2014), "Very Deep Convolutional
Networks for Large-Scale Image Recognition", as a library the DVC stages in stages/ call."""
