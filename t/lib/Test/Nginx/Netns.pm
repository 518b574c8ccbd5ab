package Test::Nginx::Netns;

# Nodes in their own network namespaces, joined through a userspace hub
# that can delay, lose and cut traffic between any two of them.

=head1 NAME

Test::Nginx::Netns - network namespaces, veth pairs and a netem hub

=head1 SYNOPSIS

    use Test::Nginx::Netns;

    my $why = Test::Nginx::Netns::unavailable();
    plan(skip_all => $why) if $why;

    my $net = Test::Nginx::Netns->new(3);
    $c->node($i)->wrap(@{$net->wrap($i)});     # nginx runs in namespace $i
    $net->sync_addr($i)     # 10.251.T.(i+1): on the hub network
    $net->mgmt_addr($i)     # 10.252.T.(i+1): reachable from the test

    $net->partition([0], [1, 2]);    # no frame between the two sides
    $net->impair(delay => 100, jitter => 5, loss => 5);   # every pair
    $net->cut(0, 1);  $net->heal;    # heal: no rule at all
    $net->run_in($i, @cmd)           # a command inside namespace $i

=head1 DESCRIPTION

This kernel, like many small VM kernels, has no C<sch_netem>, so delay
and loss are not done with C<tc>: every node namespace C<zsT-i> gets a
veth pair to a hub namespace C<zsT-hub>, where C<netem-hub> (beside this
module) forwards Ethernet frames between the ports with the rules of the
moment (see its header). A cut drops frames silently, as a failed switch
or a firewall would: TCP connections stall and time out, nothing is
refused. The veths have a 64 KiB MTU, so segmentation offloads need not be
turned off.

The test process stays in the root namespace and reaches each node over a
management veth pair (point-to-point, 10.252.T.(100+i) to
10.252.T.(i+1)), with a host route to the node's hub address, so the
harness's readiness checks and HTTP helpers work unchanged. T is a tag
unique among the namespaces of the moment (tests may run in parallel).
Everything is removed when the object goes away (and on Ctrl-C).

Root only, with C<ip> (iproute2), C<ethtool> and veth support: C<unavailable()> says
why not otherwise.

=cut

use strict;
use warnings;

use File::Basename qw(dirname);
use File::Temp ();
use POSIX ();
use Time::HiRes qw(sleep);

use Test::Nginx::Util qw(wait_for);

my $HUB = dirname(__FILE__) . '/../../netem-hub';
my @ALIVE;

sub _ip { return system('ip', @_) == 0 }

sub _sh {
    my $cmd = join ' ', @_;
    system("$cmd >/dev/null 2>&1") == 0 or die "netns: failed: $cmd\n";
}

# undef if namespaces can be used here, else the reason
sub unavailable {
    return 'network namespaces need root' if $> != 0;
    return 'no ip (iproute2) in PATH'
        if system('ip -V >/dev/null 2>&1') != 0;
    return 'no ethtool in PATH'
        if system('ethtool --version >/dev/null 2>&1') != 0;
    my $ns = "zsprobe$$";
    my $ok = system("ip netns add $ns >/dev/null 2>&1") == 0;
    return 'cannot create a network namespace (ip netns add)' unless $ok;
    my $veth = system("ip -n $ns link add a0 type veth peer name b0"
        . " >/dev/null 2>&1") == 0;
    system("ip netns del $ns >/dev/null 2>&1");
    return 'no veth support in this kernel' unless $veth;
    return;
}

sub new {
    my ($class, $n) = @_;
    my $self = bless { n => $n, pids => [] }, $class;

    # a tag no other live test uses: the hub namespace is the lock
    for my $t (map { 10 + ($$ + $_) % 240 } 0 .. 239) {
        if (system("ip netns add zs$t-hub >/dev/null 2>&1") == 0) {
            $self->{tag} = $t;
            last;
        }
    }
    die "netns: no free tag\n" unless defined $self->{tag};
    push @ALIVE, $self;
    my $t = $self->{tag};
    my $hub = "zs$t-hub";
    $self->{dir} = File::Temp::tempdir("zs-netns-XXXXXXXX", TMPDIR => 1,
        CLEANUP => 1);

    _sh("ip -n $hub link set lo up");
    for my $i (0 .. $n - 1) {
        my $ns = $self->ns($i);
        _sh("ip netns add $ns");
        _sh("ip -n $ns link set lo up");
        # the hub network
        _sh("ip -n $hub link add h$i mtu 65535 type veth"
            . " peer name s0 netns $ns mtu 65535");
        _sh("ip -n $hub link set h$i up");
        _sh("ip -n $ns addr add " . $self->sync_addr($i) . "/24 dev s0");
        _sh("ip -n $ns link set s0 up");
        # frames leave with their checksums computed: the hub copies
        # them through a packet socket, which would not complete them
        _sh("ip netns exec $ns ethtool -K s0 tx off");
        # the management link from the test (root namespace)
        my ($root_if, $here, $there) = ($self->_mgmt_if($i),
            "10.252.$t." . (100 + $i), $self->mgmt_addr($i));
        _sh("ip link add $root_if type veth peer name m0 netns $ns");
        _sh("ip addr add $here peer $there dev $root_if");
        _sh("ip -n $ns addr add $there peer $here dev m0");
        _sh("ip link set $root_if up");
        _sh("ip -n $ns link set m0 up");
        _sh("ip route add " . $self->sync_addr($i) . "/32 via $there");
    }

    $self->{ctl} = "$self->{dir}/hub.rules";
    $self->_rules('');
    my $pid = fork() // die "fork: $!\n";
    if ($pid == 0) {
        exec('ip', 'netns', 'exec', $hub, $^X, $HUB, $self->{ctl},
            map { "h$_" } 0 .. $n - 1) or POSIX::_exit(127);
    }
    $self->{hub_pid} = $pid;
    $self->_wait_ack;
    return $self;
}

sub tag { return $_[0]->{tag} }
sub size { return $_[0]->{n} }
sub ns { my ($self, $i) = @_; return "zs$self->{tag}-$i" }
sub _mgmt_if { my ($self, $i) = @_; return "zs$self->{tag}m$i" }
sub sync_addr { my ($self, $i) = @_; return "10.251.$self->{tag}." . ($i + 1) }
sub mgmt_addr { my ($self, $i) = @_; return "10.252.$self->{tag}." . ($i + 1) }

# the command prefix that runs a program inside namespace $i
sub wrap { my ($self, $i) = @_; return ['ip', 'netns', 'exec', $self->ns($i)] }

sub run_in {
    my ($self, $i, @cmd) = @_;
    return system(@{$self->wrap($i)}, @cmd) == 0;
}

# output of a command inside namespace $i
sub qx_in {
    my ($self, $i, $cmd) = @_;
    return scalar qx{ip netns exec @{[$self->ns($i)]} $cmd 2>/dev/null};
}

# established TCP connections in namespace $i (to or from $port if given)
sub established {
    my ($self, $i, $port) = @_;
    my $n = 0;
    for my $f ('/proc/net/tcp', '/proc/net/tcp6') {
        for (split /\n/, $self->qx_in($i, "cat $f")) {
            my @c = split;
            next unless @c > 3 && $c[3] eq '01';
            next if defined $port
                && !grep { /:(\w+)$/ && hex($1) == $port } @c[1, 2];
            $n++;
        }
    }
    return $n;
}

sub _rules {
    my ($self, $text) = @_;
    $self->{gen}++;
    open my $f, '>', "$self->{ctl}.tmp" or die "netns: $!\n";
    print $f "gen $self->{gen}\n$text";
    close $f;
    rename "$self->{ctl}.tmp", $self->{ctl} or die "netns: $!\n";
    $self->_wait_ack if $self->{hub_pid};
    return $self;
}

sub _wait_ack {
    my ($self) = @_;
    my $want = $self->{gen};
    wait_for(sub {
        open my $f, '<', "$self->{ctl}.ack" or return 0;
        my $g = <$f> // '';
        return $g =~ /^(\d+)/ && $1 >= $want;
    }, timeout => 10, name => 'netem hub rules') or die "netns: the hub"
        . " does not answer\n";
}

# set the rules: a list of [A, B, "options"] (A, B: ports or '*')
sub rules {
    my ($self, @rules) = @_;
    $self->{rules} = [@rules];
    return $self->_rules(join '', map { "@$_\n" } @rules);
}

sub heal { return $_[0]->rules() }

sub cut {
    my ($self, $a, $b) = @_;
    return $self->rules(@{$self->{rules} // []}, [$a, $b, 'cut']);
}

sub partition {
    my ($self, $side1, $side2) = @_;
    return $self->rules(map { my $a = $_; map { [$a, $_, 'cut'] } @$side2 }
        @$side1);
}

sub impair {
    my ($self, %o) = @_;
    return $self->rules(['*', '*', join ' ', map { "$_=$o{$_}" } sort keys %o]);
}

sub destroy {
    my ($self) = @_;
    return unless defined $self->{tag};
    if (my $pid = delete $self->{hub_pid}) {
        kill 'TERM', $pid;
        waitpid($pid, 0);
    }
    my $t = $self->{tag};
    for my $i (0 .. $self->{n} - 1) {
        system('ip link del ' . $self->_mgmt_if($i) . ' >/dev/null 2>&1');
        system('ip netns del ' . $self->ns($i) . ' >/dev/null 2>&1');
    }
    system("ip netns del zs$t-hub >/dev/null 2>&1");
    delete $self->{tag};
    @ALIVE = grep { $_ != $self } @ALIVE;
}

sub DESTROY { $_[0]->destroy }

END { $_->destroy for @ALIVE }
$SIG{INT} = sub { $_->destroy for @ALIVE; exit 130 } unless $SIG{INT};

1;
